"""Parsing the user's prompt language into expectations."""

from __future__ import annotations

import numpy as np
import pytest

from bespoke_exp.demo.punks import caption, sample_spec
from bespoke_exp.scoring.expectations import Unchecked, parse_prompt, validate_prompt

BASIC = (
    "TOK bespoke, 24x24 pixel grid portrait, female, purple solid background, brown hair, blue eyes, "
    "light skin tone, right-facing"
)
ADVANCED = (
    "TOK bespoke, 24x24 pixel grid portrait, symbolic punk style, vibrant orange solid background, "
    "black hair starting at y=3 extending to y=17, black pupils fixed at (8,12) and (13,12), "
    "brown iris eyes at (9,12) and (14,12), black nose dot at (11,13), pink lips spanning x=10-13 y=15-16, "
    "tan skin tone with jaw defined at y=19, blue collar at bottom edge y=20-22, right-facing, "
    "pure pixel art with no gradients or anti-aliasing"
)
ACCESSORY = (
    "TOK bespoke, 24x24 pixel art, male, glasses spanning x=7-16 y=11-13, black hair, green solid "
    "background, right-facing profile"
)


def test_advanced_prompt_yields_one_check_per_constraint() -> None:
    parsed = parse_prompt(ADVANCED)
    assert [e.name for e in parsed.expectations] == [
        "grid",
        "background",
        "hair@y=3-17",
        "pupils@(8,12)",
        "pupils@(13,12)",
        "iris@(9,12)",
        "iris@(14,12)",
        "nose@(11,13)",
        "lips@x=10-13,y=15-16",
        "skin:tan",
        "jaw@y=19",
        "collar@y=20-22",
        "facing",
        "pixel_art",
    ]
    assert parsed.errors == []
    background = parsed.expectations[1]
    assert (background.color, background.modifier, background.solid) == ("orange", "vibrant", True)


def test_basic_and_accessory_prompts_parse() -> None:
    basic = parse_prompt(BASIC)
    assert [e.name for e in basic.expectations] == [
        "grid",
        "unchecked:female",
        "background",
        "hair:brown",
        "eyes:blue",
        "skin:light skin",
        "facing",
    ]
    accessory = parse_prompt(ACCESSORY)
    assert [e.name for e in accessory.expectations] == [
        "grid",
        "unchecked:male",
        "glasses@x=7-16,y=11-13",
        "hair:black",
        "background",
        "facing",
    ]
    glasses = accessory.expectations[2]
    assert glasses.color is None and (glasses.box.x0, glasses.box.x1, glasses.box.y0, glasses.box.y1) == (
        7,
        16,
        11,
        13,
    )


def test_captions_of_generated_portraits_parse_fully() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        parsed = parse_prompt(caption(sample_spec(rng)))
        unchecked = [e for e in parsed.expectations if isinstance(e, Unchecked)]
        assert [e.phrase for e in unchecked] in (["male"], ["female"])
        assert parsed.errors == []


@pytest.mark.parametrize(
    "phrase", ["red mohawk", "hair somewhere on top", "pink lips spanning x=10-13", "glowing eyes at (9,12)"]
)
def test_unparseable_feature_phrases_are_reported_unchecked(phrase: str) -> None:
    parsed = parse_prompt(f"TOK bespoke, {phrase}, right-facing")
    unchecked = [e for e in parsed.expectations if isinstance(e, Unchecked)]
    assert [e.phrase for e in unchecked] == [phrase]
    assert unchecked[0].reason


def test_validate_prompt_names_phrase_and_grid() -> None:
    validate_prompt(ADVANCED)  # every coordinate inside 24x24
    with pytest.raises(ValueError, match=r"black nose dot at \(30,13\).*24x24"):
        validate_prompt("TOK bespoke, black nose dot at (30,13), right-facing")
    with pytest.raises(ValueError, match=r"pink lips spanning x=10-13 y=15-26.*24x24"):
        validate_prompt("pink lips spanning x=10-13 y=15-26")
    with pytest.raises(ValueError, match="16x16"):
        validate_prompt(ADVANCED, cells=16)
