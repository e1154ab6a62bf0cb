"""Small closed vocabularies shared by the visual describer and the catalogue engine.

These are general English attribute words (not any dataset's values): the colour names the
visual describer can output (with a prototype RGB each), and colour, material, pattern and
shape words the catalogue engine recognises as attribute values in any description.
"""

from __future__ import annotations

#: Named colours and a prototype sRGB for each (nearest in CIELAB wins).
COLOUR_PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "white": (245, 245, 245),
    "red": (200, 30, 35),
    "maroon": (120, 20, 25),
    "orange": (245, 135, 20),
    "brown": (125, 75, 35),
    "beige": (225, 205, 170),
    "gold": (205, 165, 50),
    "yellow": (240, 210, 35),
    "olive": (125, 120, 20),
    "lime": (160, 210, 60),
    "green": (40, 145, 60),
    "dark green": (20, 80, 35),
    "teal": (10, 130, 135),
    "turquoise": (65, 210, 200),
    "light blue": (150, 200, 240),
    "blue": (35, 85, 200),
    "navy": (20, 30, 100),
    "purple": (125, 50, 170),
    "lavender": (190, 160, 225),
    "pink": (240, 120, 175),
    "magenta": (200, 20, 140),
}

COLOUR_WORDS: frozenset[str] = frozenset(COLOUR_PALETTE) | frozenset({
    "gray", "ivory", "cream", "tan", "khaki", "burgundy", "crimson", "scarlet", "coral",
    "peach", "amber", "mustard", "mint", "emerald", "jade", "aqua", "cyan", "indigo",
    "violet", "lilac", "mauve", "fuchsia", "rose", "charcoal", "bronze", "copper", "nude",
    "champagne", "blush", "plum", "sapphire", "ruby", "turquoise", "multicolour", "multicolor",
})  # fmt: skip

MATERIAL_WORDS: frozenset[str] = frozenset({
    "cotton", "leather", "wool", "plastic", "bamboo", "ceramic", "linen", "steel", "silk",
    "satin", "velvet", "denim", "polyester", "nylon", "acrylic", "glass", "wood", "wooden",
    "metal", "aluminium", "aluminum", "copper", "brass", "iron", "porcelain", "stoneware",
    "rubber", "silicone", "cashmere", "fleece", "suede", "canvas", "paper", "cardboard",
    "stainless", "titanium", "marble", "stone", "crystal", "felt", "jute", "rattan",
    "microfiber", "microfibre", "spandex", "lycra", "vinyl", "foam", "latex", "oak", "pine",
})  # fmt: skip

PATTERN_WORDS: frozenset[str] = frozenset({
    "solid", "striped", "dotted", "checked", "plaid", "floral", "polka", "paisley",
    "houndstooth", "herringbone", "camouflage", "leopard", "zebra", "geometric", "tartan",
    "gingham", "patterned", "plain", "speckled", "marbled",
})  # fmt: skip

SHAPE_WORDS: frozenset[str] = frozenset({
    "circle", "circular", "round", "square", "rectangle", "rectangular", "triangle",
    "triangular", "diamond", "star", "oval", "heart", "hexagon", "hexagonal", "cylindrical",
    "spherical", "cube",
})  # fmt: skip

#: What the visual describer can say, per cue (its output vocabulary).
VISUAL_PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checked")
VISUAL_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")

#: Attribute type → its closed vocabulary (the catalogue adds brand, category, number, term).
LEXICONS: dict[str, frozenset[str]] = {
    "colour": COLOUR_WORDS,
    "material": MATERIAL_WORDS,
    "pattern": PATTERN_WORDS,
    "shape": SHAPE_WORDS,
}

STOPWORDS: frozenset[str] = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself per via each every one two
use used uses using get gets made make makes new set pack item items product products
great good best well easy may also like just only much many lot lots
""".split())  # fmt: skip

#: Substitutes for a type when the catalogue itself uses fewer than 3 of its words: the
#: values the visual describer outputs (so image-derived text stays in its own vocabulary).
CORE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOUR_PALETTE),
    "pattern": VISUAL_PATTERNS,
    "shape": VISUAL_SHAPES,
    "material": tuple(sorted(MATERIAL_WORDS)),
}
