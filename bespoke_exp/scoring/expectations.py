"""Parse the user's prompt language into checkable expectations.

    >>> parsed = parse_prompt("TOK bespoke, black pupils fixed at (8,12) and (13,12), right-facing")
    >>> [e.name for e in parsed.expectations]
    ['pupils@(8,12)', 'pupils@(13,12)', 'facing']
    >>> validate_prompt("black nose dot at (30,13)")   # raises ValueError naming the phrase

A prompt is split into comma-separated phrases (commas inside "(x,y)" don't split).
Each phrase becomes zero or more expectations, one per constraint, each with a stable
name. Coordinates are 0-based cells, x = column, y = row, origin top-left. A phrase
that names a feature but can't be turned into a check becomes an `Unchecked` entry,
so nothing the user asked for is silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bespoke_exp.pixelart import CELLS
from bespoke_exp.pixelart.cells import Box, Cell
from bespoke_exp.pixelart.colors import COLOR_ALIASES, COLOR_MODIFIERS, NAMED_COLORS, SKIN_TONES, skin_label


@dataclass(frozen=True)
class Expectation:
    """Base of every constraint; `phrase` is the prompt text it came from."""

    phrase: str

    @property
    def name(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


@dataclass(frozen=True)
class FeatureColor(Expectation):
    """A named feature in a colour (with an optional modifier such as `vibrant`); the
    subclasses say where it must be."""

    feature: str = ""
    color: str | None = ""
    modifier: str | None = None


@dataclass(frozen=True)
class Dot(FeatureColor):
    """A single cell of a colour: `black pupils fixed at (8,12)`."""

    cell: Cell = (0, 0)

    @property
    def name(self) -> str:
        return f"{self.feature}@({self.cell[0]},{self.cell[1]})"


@dataclass(frozen=True)
class BoxFill(FeatureColor):
    """A filled rectangle of a colour: `pink lips spanning x=10-13 y=15-16`."""

    box: Box = Box(0, 0, 0, 0)

    @property
    def name(self) -> str:
        return f"{self.feature}@{self.box}"

    def covered(self) -> list[Cell]:
        """The cells that must show the colour."""
        return self.box.cells()


@dataclass(frozen=True)
class BoxOutline(BoxFill):
    """A frame around a rectangle (glasses): `glasses spanning x=7-16 y=11-13`.

    Without a colour (None), the frame must hold one colour that differs from the background.
    """

    def covered(self) -> list[Cell]:
        return self.box.outline()


@dataclass(frozen=True)
class Extent(FeatureColor):
    """Rows a feature spans: `black hair starting at y=3 extending to y=17`."""

    y0: int = 0
    y1: int = 0

    @property
    def name(self) -> str:
        return f"{self.feature}@y={self.y0}-{self.y1}"


@dataclass(frozen=True)
class RegionColor(FeatureColor):
    """A feature's colour without coordinates (`brown hair`), checked in a configured region."""

    @property
    def name(self) -> str:
        return f"{self.feature}:{self.color}"


@dataclass(frozen=True)
class Background(Expectation):
    """`vibrant orange solid background`: the outer ring of cells."""

    color: str = ""
    modifier: str | None = None
    solid: bool = False

    @property
    def name(self) -> str:
        return "background"


@dataclass(frozen=True)
class Jaw(Expectation):
    """`jaw defined at y=19`: the last row where the head is wider than the neck."""

    y: int = 0

    @property
    def name(self) -> str:
        return f"jaw@y={self.y}"


@dataclass(frozen=True)
class Facing(Expectation):
    """`right-facing`: the face (skin) sits right of the head's back (hair)."""

    direction: str = "right"

    @property
    def name(self) -> str:
        return "facing"


@dataclass(frozen=True)
class PixelArt(Expectation):
    """`pure pixel art with no gradients or anti-aliasing`: flat cells, hard edges."""

    @property
    def name(self) -> str:
        return "pixel_art"


@dataclass(frozen=True)
class GridSize(Expectation):
    """`24x24 pixel grid portrait`: the picture fits a cells x cells grid of flat cells."""

    cells: int = CELLS

    @property
    def name(self) -> str:
        return "grid"


@dataclass(frozen=True)
class Unchecked(Expectation):
    """A phrase naming a feature that the harness can't check, and why."""

    reason: str = ""

    @property
    def name(self) -> str:
        return f"unchecked:{self.phrase}"


@dataclass(frozen=True)
class ReadLimit:
    """How much of a prompt the text encoder read: its first `chars` characters. Phrases that end
    after it are reported unchecked with `reason`; the model never saw them (or all of them)."""

    chars: int
    reason: str


@dataclass
class ParsedPrompt:
    """Expectations of one prompt, phrases it ignored (no feature named) and errors."""

    expectations: list[Expectation] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# Feature words, singular and plural, mapped to the feature's stable name.
FEATURES: dict[str, str] = {
    "pupil": "pupils", "pupils": "pupils",
    "iris": "iris", "irises": "iris", "eye": "eyes", "eyes": "eyes",
    "nose": "nose", "lip": "lips", "lips": "lips", "mouth": "lips",
    "hair": "hair", "skin": "skin", "collar": "collar", "glasses": "glasses",
    "jaw": "jaw", "background": "background",
}  # fmt: skip
# Features people write that no check exists for yet: reported as unchecked.
UNCHECKED_FEATURES = (
    "beard", "mustache", "moustache", "hat", "cap", "beanie", "hood", "hoodie", "earring",
    "mohawk", "cigarette", "pipe", "mask", "headband", "bandana", "necklace", "teeth", "smile",
    "ear", "eyebrow", "eyebrows", "tiara", "crown", "helmet", "scarf", "chain", "freckles",
    "shades", "goggles", "visor", "tattoo",
)  # fmt: skip
_GENDER = re.compile(r"\b(male|female|man|woman|boy|girl)\b")
_SPLIT = re.compile(r",(?![^()]*\))")  # commas outside parentheses
_POINT = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_X = re.compile(r"\bx\s*=\s*(\d+)(?:\s*(?:-|to)\s*(\d+))?")
_Y = re.compile(r"\by\s*=\s*(\d+)(?:\s*(?:-|to)\s*(\d+))?")
_GRID = re.compile(r"\b(\d+)\s*x\s*(\d+)\b")
_COLOR_WORDS = sorted({*NAMED_COLORS, *COLOR_ALIASES}, key=len, reverse=True)
_COLOR = re.compile(rf"\b(?:({'|'.join(COLOR_MODIFIERS)})\s+)?({'|'.join(_COLOR_WORDS)})\b")
_SKIN = re.compile(rf"\b({'|'.join(SKIN_TONES)})\s+skin\b")


def _color(text: str) -> tuple[str | None, str | None]:
    """(colour name, modifier) of the first colour word in `text`, else (None, None)."""
    m = _COLOR.search(text)
    if not m:
        return None, None
    return COLOR_ALIASES.get(m.group(2), m.group(2)), m.group(1)


def _ranges(pattern: re.Pattern[str], text: str) -> list[int]:
    return [int(v) for m in pattern.finditer(text) for v in m.groups() if v is not None]


def parse_phrase(phrase: str, cells: int = CELLS) -> tuple[list[Expectation], list[str], bool]:
    """Expectations from one phrase, out-of-grid errors, and whether it named anything."""
    text = phrase.strip().lower()
    coords = [v for m in _POINT.finditer(text) for v in map(int, m.groups())]
    coords += _ranges(_X, text) + _ranges(_Y, text)
    bad = [v for v in coords if not 0 <= v < cells]
    if bad:
        return (
            [],
            [
                f"prompt phrase {phrase.strip()!r}: coordinate {bad[0]} is outside the "
                f"{cells}x{cells} grid (valid cells are 0..{cells - 1})"
            ],
            True,
        )
    words = set(re.findall(r"[a-z]+", text))
    style = _style_expectation(phrase, text, words)
    if style is not None:
        return [style], [], True
    unknown = sorted(words & set(UNCHECKED_FEATURES))
    named = [FEATURES[w] for w in re.findall(r"[a-z]+", text) if w in FEATURES]
    if unknown and not named:
        return [Unchecked(phrase, reason=f"no check exists for {', '.join(unknown)}")], [], True
    if not named:
        return [], [], False  # style words, trigger words, or nothing a check could use
    return _feature_expectations(phrase, text, words, named[0]), [], True


def _style_expectation(phrase: str, text: str, words: set[str]) -> Expectation | None:
    """The phrases about the picture as a whole: pixel-art style, grid size, facing, gender."""
    if "anti-aliasing" in text or "antialiasing" in text or "gradient" in text:
        return PixelArt(phrase)
    if "facing" in words:
        return Facing(phrase, direction="left" if "left" in words else "right")
    grid = _GRID.search(text)
    if grid and ("pixel" in words or "grid" in words):
        return GridSize(phrase, cells=int(grid.group(1)))
    if _GENDER.search(text) and not (words & set(FEATURES)):
        return Unchecked(phrase, reason="gender is not measurable from cell colours")
    return None


def _feature_expectations(phrase: str, text: str, words: set[str], feature: str) -> list[Expectation]:
    """A named feature's constraints, by what the phrase gives: cells, a box, rows, a colour."""
    color, modifier = _color(text)
    skin = _SKIN.search(text)
    points = [(int(a), int(b)) for a, b in _POINT.findall(text)]
    xs, ys = _ranges(_X, text), _ranges(_Y, text)
    if feature == "background":
        if color is None:
            return [Unchecked(phrase, reason="background without a colour name")]
        return [Background(phrase, color=color, modifier=modifier, solid="solid" in words)]
    if feature == "skin" or skin:
        out: list[Expectation] = []
        if skin:
            out.append(RegionColor(phrase, feature="skin", color=skin_label(skin.group(1))))
        if "jaw" in words and ys:
            out.append(Jaw(phrase, y=ys[0]))
        return out or [Unchecked(phrase, reason="skin without a tone (light, tan, dark)")]
    if feature == "jaw" and ys:
        return [Jaw(phrase, y=ys[0])]
    if feature == "eyes" and "iris" in words:
        feature = "iris"
    if points:
        dot_color = color or ("black" if feature in ("pupils", "nose") else None)
        if dot_color is None:
            return [Unchecked(phrase, reason=f"{feature} at a cell without a colour name")]
        return [Dot(phrase, feature=feature, color=dot_color, cell=p, modifier=modifier) for p in points]
    if xs and ys:
        box = Box(min(xs), max(xs), min(ys), max(ys))
        if feature == "glasses":
            return [BoxOutline(phrase, feature=feature, color=color, box=box, modifier=modifier)]
        if color is None:
            return [Unchecked(phrase, reason=f"{feature} box without a colour name")]
        return [BoxFill(phrase, feature=feature, color=color, box=box, modifier=modifier)]
    if ys:
        if color is None:
            return [Unchecked(phrase, reason=f"{feature} rows without a colour name")]
        return [Extent(phrase, feature=feature, color=color, y0=min(ys), y1=max(ys), modifier=modifier)]
    if xs:
        return [Unchecked(phrase, reason="columns (x=) without rows (y=)")]
    if color is not None:
        return [RegionColor(phrase, feature=feature, color=color, modifier=modifier)]
    return [Unchecked(phrase, reason=f"{feature} without a colour or coordinates")]


def _phrases(text: str) -> list[tuple[str, int, int]]:
    """(phrase, start, end) of each non-empty phrase, stripped, with its place in `text`."""
    found, start = [], 0
    for end in [m.start() for m in _SPLIT.finditer(text)] + [len(text)]:
        piece = text[start:end]
        if piece.strip():
            first = start + len(piece) - len(piece.lstrip())
            found.append((piece.strip(), first, first + len(piece.strip())))
        start = end + 1
    return found


def parse_prompt(text: str, cells: int = CELLS, read_limit: ReadLimit | None = None) -> ParsedPrompt:
    """Every expectation the prompt states (see module docstring). With `read_limit`, a phrase
    that ends beyond what the text encoder read becomes one Unchecked entry instead."""
    parsed = ParsedPrompt()
    for phrase, start, end in _phrases(text):
        exps, errors, named = parse_phrase(phrase, cells)
        if read_limit is not None and end > read_limit.chars and named and not errors:
            partly = "partly " if start < read_limit.chars else ""
            exps = [Unchecked(phrase, reason=partly + read_limit.reason)]
        parsed.expectations += exps
        parsed.errors += errors
        if not named:
            parsed.ignored.append(phrase)
    return parsed


def merge_expectations(parsed: list[Expectation], extra: list[Expectation]) -> list[Expectation]:
    """Parsed expectations with `extra` added; an extra with the same name replaces one."""
    by_name = {e.name: e for e in parsed}
    for e in extra:
        by_name[e.name] = e
    return list(by_name.values())


def validate_prompt(text: str, cells: int = CELLS) -> None:
    """Raise ValueError naming the phrase and grid size if a coordinate is off the grid."""
    errors = parse_prompt(text, cells).errors
    if errors:
        raise ValueError("; ".join(errors))
