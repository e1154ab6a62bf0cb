"""The demo world's config: size and seed (pipeline/demo/ builds and writes the world)."""

from __future__ import annotations

import hashlib
import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Bump when the generator's output changes for the same config: old folders are rewritten.
FORMAT_VERSION = 1

#: The attributes of every item: three seen only in its picture, three only in its text.
IMAGE_ATTRIBUTES: tuple[str, ...] = ("colour", "pattern", "shape")
TEXT_ATTRIBUTES: tuple[str, ...] = ("brand", "material", "category")
ATTRIBUTES: tuple[str, ...] = IMAGE_ATTRIBUTES + TEXT_ATTRIBUTES


class DemoConfig(BaseModel):
    """Size and seed of the demo world. Same config → byte-identical files."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, description="Seed of everything random in the world.")
    # 1,500 users x 1,000 items at 9 interactions a user gives Amazon's long tail after the 5-core:
    # an item's median training count is 8 (Beauty: 6), and content (the users' attribute tastes)
    # is what generalises to the tail (README, "The demo world").
    n_users: int = Field(default=1500, description="Number of users (reviewers).")
    n_items: int = Field(default=1000, description="Number of items (asins).")
    mean_interactions: float = Field(
        default=9.0,
        description="Mean number of interactions (reviews) per user; a user's count is "
        "capped at n_items // 2.",
    )
    min_interactions: int = Field(
        default=5, description="Every user has at least this many interactions (5-core)."
    )
    min_likes: int = Field(default=2, description="Fewest (attribute, value) likes per user.")
    max_likes: int = Field(default=3, description="Most (attribute, value) likes per user.")
    preference_strength: float = Field(
        default=2.0, description="Log-odds added per matched like; 0 = preferences ignored."
    )
    popularity_exponent: float = Field(
        default=0.6, description="Exponent on the Zipf-like item popularity; 0 = ignored."
    )
    image_size: int = Field(default=64, description="Side of the square PNG pictures (px).")
    missing_image_fraction: float = Field(
        default=0.0, description="Fraction of items whose picture is deliberately not written."
    )

    @field_validator("n_users")
    @classmethod
    def _check_users(cls, v: int) -> int:
        if not 10 <= v <= 9_999_999:
            raise ValueError(f"n_users must be between 10 and 9,999,999 (got {v})")
        return v

    @field_validator("n_items")
    @classmethod
    def _check_items(cls, v: int) -> int:
        if not 20 <= v <= 99_999:
            raise ValueError(
                f"n_items must be between 20 and 99,999 (got {v}); fewer items cannot cover "
                "the attribute vocabularies, and asins have 5 digits"
            )
        return v

    @field_validator("min_interactions")
    @classmethod
    def _check_min_interactions(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"min_interactions must be at least 1 (got {v})")
        return v

    @field_validator("min_likes", "max_likes")
    @classmethod
    def _check_likes(cls, v: int, info) -> int:
        if not 2 <= v <= len(ATTRIBUTES):
            raise ValueError(
                f"{info.field_name} must be between 2 and {len(ATTRIBUTES)} (got {v}): a user "
                "likes at least one image-only and one text-only attribute value"
            )
        return v

    @field_validator("preference_strength", "popularity_exponent")
    @classmethod
    def _check_non_negative(cls, v: float, info) -> float:
        if not (math.isfinite(v) and 0 <= v <= 20):
            raise ValueError(f"{info.field_name} must be a number between 0 and 20 (got {v})")
        return v

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, v: int) -> int:
        if not 16 <= v <= 1024:
            raise ValueError(f"image_size must be between 16 and 1024 px (got {v})")
        return v

    @field_validator("missing_image_fraction")
    @classmethod
    def _check_missing(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"missing_image_fraction must be in [0, 1) (got {v})")
        return v

    @model_validator(mode="after")
    def _check_consistent(self) -> DemoConfig:
        if self.max_likes < self.min_likes:
            raise ValueError(
                f"max_likes ({self.max_likes}) must be >= min_likes ({self.min_likes})"
            )
        mean = self.mean_interactions
        if not math.isfinite(mean) or mean < self.min_interactions:
            raise ValueError(
                f"mean_interactions ({self.mean_interactions}) must be >= min_interactions "
                f"({self.min_interactions})"
            )
        if self.min_interactions > self.n_items // 2:
            raise ValueError(
                f"min_interactions ({self.min_interactions}) must be at most half of n_items "
                f"({self.n_items}); users sample items without replacement"
            )
        return self

    def config_hash(self) -> str:
        """Identifies the files this config produces (includes the generator's version)."""
        payload = f"neggen-demo-v{FORMAT_VERSION}:{self.model_dump_json()}"
        return hashlib.sha256(payload.encode()).hexdigest()
