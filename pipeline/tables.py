"""Every table and stage folder of a dataset's home, named once.

A table is `<home>/<dataset>/<name>.parquet` (pipeline/storage.py); a model stage keeps its
runs in the folder `<home>/<dataset>/<stage>/`. Most names are also the name of the Dagster
asset that writes them. Every module that reads or writes a table names it from here.
"""

from __future__ import annotations

# The data stage (pipeline/datastage.py).
INTERACTIONS = "interactions"
ITEMS = "items"
USERS = "users"
SOURCE_ITEMS = "source_items"  # the source's item digests at the last read (pipeline/source_items.py)

# The generation stages (one each; pipeline/llm/stages.py), each with its failures table.
ITEM_DESCRIPTIONS = "item_descriptions"
MASKED_DESCRIPTIONS = "masked_descriptions"
NEGATIVE_DESCRIPTIONS = "negative_descriptions"
DIRECT_NEGATIVES = "direct_negatives"

# Attribute encoding (pipeline/encoding.py) and how hard the negatives are (pipeline/study.py).
TEXT_EMBEDDINGS = "text_embeddings"
IMAGE_EMBEDDINGS = "image_embeddings"
NEGATIVE_HARDNESS = "negative_hardness"

# The model stages: each is an asset and a folder of runs.
BASE_MODEL = "base_model"  # LightGCN (pipeline/training.py)
NEGGEN_MODEL = "neggen_model"  # NegGen and its ablations (pipeline/study.py)
BASELINES = "baselines"  # the Table 2 baselines (pipeline/baselines.py)
NEGGEN_METRICS = "neggen_metrics"
NEGGEN_HISTORY = "neggen_history"  # per epoch, with the gradient magnitudes of the negatives
BASELINES_METRICS = "baselines_metrics"
BASELINES_GRID = "baselines_grid"
METRICS = "metrics"  # every model's metric rows

# The report (pipeline/report.py): a folder with report.md and its figures, and every number shown.
REPORT = "report"
REPORT_TABLES = "report_tables"


def failures_table(table: str) -> str:
    """The items a generation stage could not generate, with the reason."""
    return f"{table}_failures"


def history_table(stage: str) -> str:
    """The per-epoch history of a model stage's latest run (pipeline/training.py)."""
    return f"{stage}_history"
