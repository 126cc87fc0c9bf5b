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

from bespoke_exp.colors import COLOR_ALIASES, COLOR_MODIFIERS, NAMED_COLORS, SKIN_TONES, skin_label

Cell = tuple[int, int]


@dataclass(frozen=True)
class Box:
    """Inclusive cell rectangle, as in `x=10-13 y=15-16`."""

    x0: int
    x1: int
    y0: int
    y1: int

    def cells(self) -> list[Cell]:
        return [(x, y) for y in range(self.y0, self.y1 + 1) for x in range(self.x0, self.x1 + 1)]

    def outline(self) -> list[Cell]:
        return [(x, y) for x, y in self.cells() if x in (self.x0, self.x1) or y in (self.y0, self.y1)]

    def __str__(self) -> str:
        return f"x={self.x0}-{self.x1},y={self.y0}-{self.y1}"


@dataclass(frozen=True)
class Expectation:
    """Base of every constraint; `phrase` is the prompt text it came from."""

    phrase: str

    @property
    def name(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


@dataclass(frozen=True)
class Dot(Expectation):
    """A single cell of a colour: `black pupils fixed at (8,12)`."""

    feature: str = ""
    color: str = ""
    cell: Cell = (0, 0)
    modifier: str | None = None

    @property
    def name(self) -> str:
        return f"{self.feature}@({self.cell[0]},{self.cell[1]})"


@dataclass(frozen=True)
class BoxFill(Expectation):
    """A filled rectangle of a colour: `pink lips spanning x=10-13 y=15-16`."""

    feature: str = ""
    color: str = ""
    box: Box = Box(0, 0, 0, 0)
    modifier: str | None = None

    @property
    def name(self) -> str:
        return f"{self.feature}@{self.box}"


@dataclass(frozen=True)
class BoxOutline(Expectation):
    """A frame around a rectangle (glasses): `glasses spanning x=7-16 y=11-13`.

    Without a colour, the frame must hold one colour that differs from the background.
    """

    feature: str = ""
    color: str | None = None
    box: Box = Box(0, 0, 0, 0)
    modifier: str | None = None

    @property
    def name(self) -> str:
        return f"{self.feature}@{self.box}"


@dataclass(frozen=True)
class Extent(Expectation):
    """Rows a feature spans: `black hair starting at y=3 extending to y=17`."""

    feature: str = ""
    color: str = ""
    y0: int = 0
    y1: int = 0
    modifier: str | None = None

    @property
    def name(self) -> str:
        return f"{self.feature}@y={self.y0}-{self.y1}"


@dataclass(frozen=True)
class RegionColor(Expectation):
    """A feature's colour without coordinates (`brown hair`), checked in a configured region."""

    feature: str = ""
    color: str = ""
    modifier: str | None = None

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

    cells: int = 24

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
_STYLE_WORDS = re.compile(r"\b(tok|bespoke|style|portrait|symbolic|punk|profile|pixel|art)\b")
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


def parse_phrase(phrase: str, cells: int = 24) -> tuple[list[Expectation], list[str], bool]:
    """Expectations from one phrase, out-of-grid errors, and whether it named anything."""
    text = phrase.strip().lower()
    words = set(re.findall(r"[a-z]+", text))
    out: list[Expectation] = []
    errors: list[str] = []
    coords = [v for m in _POINT.finditer(text) for v in map(int, m.groups())]
    coords += _ranges(_X, text) + _ranges(_Y, text)
    bad = [v for v in coords if not 0 <= v < cells]
    if bad:
        errors.append(f"prompt phrase {phrase.strip()!r}: coordinate {bad[0]} is outside the "
                      f"{cells}x{cells} grid (valid cells are 0..{cells - 1})")
        return out, errors, True

    if "anti-aliasing" in text or "antialiasing" in text or "gradient" in text:
        return [PixelArt(phrase)], errors, True
    if "facing" in words:
        direction = "left" if "left" in words else "right"
        return [Facing(phrase, direction=direction)], errors, True
    grid = _GRID.search(text)
    if grid and ("pixel" in words or "grid" in words):
        return [GridSize(phrase, cells=int(grid.group(1)))], errors, True
    if _GENDER.search(text) and not (words & set(FEATURES)):
        return [Unchecked(phrase, reason="gender is not measurable from cell colours")], errors, True

    unknown = sorted(words & set(UNCHECKED_FEATURES))
    named = [FEATURES[w] for w in re.findall(r"[a-z]+", text) if w in FEATURES]
    if unknown and not named:
        return [Unchecked(phrase, reason=f"no check exists for {', '.join(unknown)}")], errors, True
    if not named:
        if _STYLE_WORDS.search(text) or not text:
            return out, errors, False
        return out, errors, False

    feature = named[0]
    color, modifier = _color(text)
    skin = _SKIN.search(text)
    points = [(int(a), int(b)) for a, b in _POINT.findall(text)]
    xs, ys = _ranges(_X, text), _ranges(_Y, text)

    if feature == "background":
        if color is None:
            return [Unchecked(phrase, reason="background without a colour name")], errors, True
        return [Background(phrase, color=color, modifier=modifier, solid="solid" in words)], errors, True
    if feature == "skin" or skin:
        if skin:
            out.append(RegionColor(phrase, feature="skin", color=skin_label(skin.group(1))))
        if "jaw" in words and ys:
            out.append(Jaw(phrase, y=ys[0]))
        if not out:
            out.append(Unchecked(phrase, reason="skin without a tone (light, tan, dark)"))
        return out, errors, True
    if feature == "jaw" and ys:
        return [Jaw(phrase, y=ys[0])], errors, True
    if feature == "eyes" and "iris" in words:
        feature = "iris"
    if points:
        dot_color = color or ("black" if feature in ("pupils", "nose") else None)
        if dot_color is None:
            return [Unchecked(phrase, reason=f"{feature} at a cell without a colour name")], errors, True
        return [Dot(phrase, feature=feature, color=dot_color, cell=p, modifier=modifier) for p in points], errors, True
    if xs and ys:
        box = Box(min(xs), max(xs), min(ys), max(ys))
        if feature == "glasses":
            return [BoxOutline(phrase, feature=feature, color=color, box=box, modifier=modifier)], errors, True
        if color is None:
            return [Unchecked(phrase, reason=f"{feature} box without a colour name")], errors, True
        return [BoxFill(phrase, feature=feature, color=color, box=box, modifier=modifier)], errors, True
    if ys:
        if color is None:
            return [Unchecked(phrase, reason=f"{feature} rows without a colour name")], errors, True
        return [Extent(phrase, feature=feature, color=color, y0=min(ys), y1=max(ys), modifier=modifier)], errors, True
    if xs:
        return [Unchecked(phrase, reason="columns (x=) without rows (y=)")], errors, True
    if color is not None:
        return [RegionColor(phrase, feature=feature, color=color, modifier=modifier)], errors, True
    return [Unchecked(phrase, reason=f"{feature} without a colour or coordinates")], errors, True


def parse_prompt(text: str, cells: int = 24) -> ParsedPrompt:
    """Every expectation the prompt states (see module docstring)."""
    parsed = ParsedPrompt()
    for phrase in _SPLIT.split(text):
        if not phrase.strip():
            continue
        exps, errors, named = parse_phrase(phrase.strip(), cells)
        parsed.expectations += exps
        parsed.errors += errors
        if not named:
            parsed.ignored.append(phrase.strip())
    return parsed


def merge_expectations(parsed: list[Expectation], extra: list[Expectation]) -> list[Expectation]:
    """Parsed expectations with `extra` added; an extra with the same name replaces one."""
    by_name = {e.name: e for e in parsed}
    for e in extra:
        by_name[e.name] = e
    return list(by_name.values())


def validate_prompt(text: str, cells: int = 24) -> None:
    """Raise ValueError naming the phrase and grid size if a coordinate is off the grid."""
    errors = parse_prompt(text, cells).errors
    if errors:
        raise ValueError("; ".join(errors))
