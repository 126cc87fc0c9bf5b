"""Prompt sets with templates, and in-set vs held-out: a template expands to exactly the prompts
and expectations its slots say, the same on every run; a prompt is in-set only when its phrases
are a training caption's; a bad template is refused in one line naming it and its slot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from bespoke_exp import tracking
from bespoke_exp.config import ConfigError, compose_config, flatten, job_config
from bespoke_exp.config.schema import PromptConfig, PromptTemplateConfig
from bespoke_exp.job.prompt_sets import (
    MAX_PROMPTS,
    caption_phrases,
    expand_prompt_set,
    expand_templates,
    mark_splits,
    read_captions,
)
from bespoke_exp.job.run import run_job
from bespoke_exp.job.validate import PROMPT_ID, config_problems
from tests.helpers import REPO, SECRET

PORTRAIT = {
    "id": "look",
    "text": "bespoke, {gender}, {background} background, {accessory}",
    "slots": {"gender": ["female", "male"], "background": ["blue", "green"], "accessory": ["black glasses"]},
    "expectations": {"accessory": {"black glasses": ["black glasses spanning x=7-16 y=11-13"]}},
}
GRID = {  # 6 x 6 x 6 = 216 combinations, to sample from
    "id": "grid",
    "text": "{a} background, {b} skin, {c} hair",
    "slots": {slot: [f"{slot}{i}" for i in range(6)] for slot in "abc"},
}


def _expand(*templates: dict, taken: tuple[str, ...] = ()) -> list:
    prompts, problems = expand_templates(list(templates), taken)
    assert problems == []
    return prompts


def test_a_template_expands_to_every_combination_last_slot_fastest_with_what_its_values_imply() -> None:
    prompts = _expand(PORTRAIT)
    assert [(p.id, p.text) for p in prompts] == [
        ("look-female-blue-black_glasses", "bespoke, female, blue background, black glasses"),
        ("look-female-green-black_glasses", "bespoke, female, green background, black glasses"),
        ("look-male-blue-black_glasses", "bespoke, male, blue background, black glasses"),
        ("look-male-green-black_glasses", "bespoke, male, green background, black glasses"),
    ]
    assert all(p.expectations == ["black glasses spanning x=7-16 y=11-13"] for p in prompts)
    assert all(p.split is None for p in prompts)  # the captions decide, later


def test_expectations_follow_the_value_each_prompt_got_and_a_template_split_is_every_prompts() -> None:
    template = {
        "id": "eyes",
        "text": "bespoke, {eyes} eyes, {hair} hair",
        "slots": {"eyes": ["brown", "blue"], "hair": ["red", "black"]},
        "expectations": {
            "eyes": {"blue": ["blue iris eyes at (9,12) and (14,12)"]},
            "hair": {"red": ["red hair starting at y=3 extending to y=17"]},
        },
        "split": "heldout",
    }
    by_id = {p.id: p for p in _expand(template)}
    assert by_id["eyes-brown-black"].expectations == []
    assert by_id["eyes-brown-red"].expectations == ["red hair starting at y=3 extending to y=17"]
    assert by_id["eyes-blue-red"].expectations == [
        "blue iris eyes at (9,12) and (14,12)",
        "red hair starting at y=3 extending to y=17",
    ]
    assert {p.split for p in by_id.values()} == {"heldout"}


def test_ids_are_safe_for_any_value_and_stay_unique_when_cut_to_64_characters() -> None:
    template = {
        "id": "long.prefix_v2",
        "text": "{what}, {where}",
        "slots": {
            "what": ["gr\u00fcn (hair:1.2) / x=7-16", "a" * 70],
            "where": ["\u7dd1", "b" * 70, "c" * 70],
        },
    }
    ids = [p.id for p in _expand(template)]
    assert all(PROMPT_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids) == 6
    assert ids[0] == "long.prefix_v2-gr_n_hair_1_2_x_7_16-where0"  # no ASCII left: its place in the list


def test_a_limit_takes_that_many_of_the_combinations_in_their_order_and_the_seed_picks_which() -> None:
    every = [p.text for p in _expand(GRID)]
    sample = [p.text for p in _expand({**GRID, "limit": 5})]
    assert len(every) == 216 and len(sample) == 5
    assert sample == [text for text in every if text in sample]  # a subset, in product order
    assert sample == [p.text for p in _expand({**GRID, "limit": 5, "seed": 0})]  # seed 0 is the default
    others = [[p.text for p in _expand({**GRID, "limit": 5, "seed": seed})] for seed in (1, 2)]
    assert sample not in others and others[0] != others[1]
    assert [p.text for p in _expand({**GRID, "limit": 500})] == every  # more than there are: all


def test_the_limit_sample_is_the_same_in_every_process() -> None:
    """Not Python's salted str hash, nor set order: the ids a fresh interpreter draws are these."""
    code = (
        "import json, sys; from bespoke_exp.job.prompt_sets import expand_templates; "
        "print(json.dumps([p.id for p in expand_templates([json.loads(sys.argv[1])])[0]]))"
    )
    template = json.dumps({**GRID, "limit": 7, "seed": 3})
    drawn = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code, template],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
                env={**os.environ, "PYTHONHASHSEED": salt},
            ).stdout
        )
        for salt in ("1", "2")
    ]
    assert drawn[0] == drawn[1] == [p.id for p in _expand({**GRID, "limit": 7, "seed": 3})]


def test_adding_a_value_keeps_every_earlier_draw_that_still_ranks_in_the_sample() -> None:
    """The sample ranks each prompt by a hash of its own text: a new value can displace a draw,
    never reshuffle the rest."""
    before = {p.text for p in _expand({**GRID, "limit": 20})}
    more = {**GRID, "slots": {**GRID["slots"], "c": [*GRID["slots"]["c"], "c6"]}, "limit": 20}
    after = {p.text for p in _expand(more)}
    new = {text for text in after if text.endswith("c6 hair")}
    assert after - before == new and len(before - after) == len(new)


# --- in-set vs held-out ----------------------------------------------------------------

CAPTIONS = [
    "bespoke, pixel art portrait, female, purple background, light skin, yellow hair",
    "TOK bespoke, 24x24 pixel grid, black pupils fixed at (8,12) and (13,12), tan skin tone",
]
CAPTION = CAPTIONS[0]


@pytest.mark.parametrize(
    ("text", "split"),
    [
        (CAPTION, "train"),  # the caption itself
        ("bespoke, pixel art portrait, light skin, yellow hair, female, purple background", "train"),
        ("  Bespoke ,pixel  art portrait,female, PURPLE background,light skin,   yellow hair ", "train"),
        (
            "bespoke, (pixel art portrait:1.2), female, [purple background], (light skin), yellow hair",
            "train",
        ),
        ("tan skin tone, TOK bespoke, black pupils fixed at (8, 12) and (13,12), 24x24 pixel grid", "train"),
        (CAPTION.replace("yellow hair", "white hair"), "heldout"),
        (CAPTION.replace("bespoke, ", ""), "heldout"),  # no trigger word
        (CAPTION + ", glasses", "heldout"),
        (CAPTION.replace(", light skin", ""), "heldout"),  # one phrase fewer
        (CAPTIONS[1].replace("(13,12)", "(13,13)"), "heldout"),
    ],
)
def test_a_prompt_is_in_set_only_when_its_phrases_are_exactly_a_captions(text: str, split: str) -> None:
    assert mark_splits([text], CAPTIONS) == [split]


def test_a_cell_stays_in_its_phrase_and_weighting_is_not_a_phrase() -> None:
    phrases = caption_phrases("TOK bespoke, black pupils fixed at (8,12) and (13,12), (red hair:1.3)")
    assert len(phrases) == 3 and {"tok bespoke", "red hair"} < phrases


def test_an_unseen_combination_of_seen_values_is_heldout() -> None:
    """Every value below is in a caption; the combinations other than the captions' are not."""
    captions = ["bespoke, female, blue background", "bespoke, male, green background"]
    template = {
        "id": "t",
        "text": "bespoke, {gender}, {background} background",
        "slots": {"gender": ["female", "male"], "background": ["blue", "green"]},
    }
    prompts = _expand(template)
    assert dict(zip((p.id for p in prompts), mark_splits([p.text for p in prompts], captions))) == {
        "t-female-blue": "train",
        "t-female-green": "heldout",
        "t-male-blue": "heldout",
        "t-male-green": "train",
    }


def _kohya_folder(root: Path, captions: dict[str, str]) -> Path:
    """A kohya training folder: `<repeats>_<name>/` subfolders of images with `.txt` captions."""
    for name, caption in captions.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".png").write_bytes(b"")  # only its name is read
        path.with_suffix(".txt").write_text(caption + "\n")
    return root


def test_captions_are_read_beside_images_in_every_subfolder(tmp_path) -> None:
    folder = _kohya_folder(tmp_path / "train", {"10_bespoke/b": "second", "4_other/a": "first\n\nthird"})
    (folder / "10_bespoke" / "notes.txt").write_text("not a caption: no image beside it")
    assert read_captions(folder) == ["second", "first", "third"]


def test_a_training_folder_without_captions_is_named_and_leaves_splits_unmarked(tmp_path) -> None:
    folder = tmp_path / "images_only"
    (folder / "5_x").mkdir(parents=True)
    (folder / "5_x" / "0001.png").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{re.escape(str(folder))} holds no captions"):
        read_captions(folder)
    items = [{"id": "p", "text": "bespoke, male"}, {"id": "q", "text": "bespoke, female", "split": "train"}]
    cfg = _config(tmp_path, items, train_dir=folder)
    with pytest.warns(
        UserWarning, match=f"train_dir: {re.escape(str(folder))} holds no captions.*, so 1 prompts"
    ):
        cfg = expand_prompt_set(cfg)
    assert [item.split for item in cfg.prompts["items"]] == [None, "train"]  # images alone: as before


def _config(tmp_path: Path, items: list[dict], templates: list[dict] = (), train_dir: Path | None = None):
    """The demo config with a prompt set of the user's own (a --config-dir folder)."""
    folder = tmp_path / "conf"
    (folder / "prompts").mkdir(parents=True, exist_ok=True)
    data = {"name": "mine", "items": items, **({"templates": list(templates)} if templates else {})}
    (folder / "prompts" / "mine.yaml").write_text(OmegaConf.to_yaml(data))
    train = f"checkpoint.train_dir={train_dir}" if train_dir else "checkpoint.train_dir=null"
    return compose_config(["prompts=mine", train], [f"file://{folder}"])


def test_the_expanded_set_is_marked_from_the_captions_and_an_explicit_split_wins(tmp_path) -> None:
    folder = _kohya_folder(tmp_path / "train", {"10_bespoke/0": "bespoke, female, blue background"})
    items = [
        {"id": "caption", "text": "bespoke, blue background, female"},
        {"id": "caption_but_heldout", "text": "bespoke, female, blue background", "split": "heldout"},
        {"id": "new", "text": "bespoke, male, blue background"},
    ]
    template = {
        "id": "t",
        "text": "bespoke, {gender}, blue background",
        "slots": {"gender": ["female", "male"]},
    }
    stated = {**template, "id": "s", "split": "train"}
    cfg = expand_prompt_set(_config(tmp_path, items, [template, stated], train_dir=folder))
    assert {item.id: item.split for item in cfg.prompts["items"]} == {
        "caption": "train",
        "caption_but_heldout": "heldout",
        "new": "heldout",
        "t-female": "train",
        "t-male": "heldout",
        "s-female": "train",
        "s-male": "train",  # the template says so, against the captions
    }
    assert "templates" not in cfg.prompts
    assert expand_prompt_set(cfg) == cfg  # once expanded, expanding again changes nothing


def test_without_a_training_folder_splits_stay_as_written(tmp_path) -> None:
    cfg = expand_prompt_set(_config(tmp_path, [{"id": "p", "text": "bespoke, male"}], [PORTRAIT]))
    assert [item.split for item in cfg.prompts["items"]] == [None] * 5


def test_template_text_is_taken_as_written(tmp_path, secret_env) -> None:
    template = {
        "id": "t",
        "text": f"bespoke, {secret_env}, \\${{x}}, {{hair}} hair",
        "slots": {"hair": ["red"]},
        "expectations": {"hair": {"red": [f"{secret_env} hair"]}},
    }
    cfg = expand_prompt_set(_config(tmp_path, [], [template]))
    data = job_config(cfg)
    [item] = data["prompts"]["items"]
    assert item["text"] == f"bespoke, {secret_env}, \\${{x}}, red hair"
    assert item["expectations"] == [f"{secret_env} hair"]
    assert SECRET not in json.dumps(flatten(data))


# --- bad templates ----------------------------------------------------------------------


def _slots(**slots) -> dict:
    return {"id": "bad", "text": " ".join(f"{{{s}}}" for s in slots), "slots": slots}


def _values(count: int) -> list[str]:
    return [str(i) for i in range(count)]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({**PORTRAIT, "text": "{gender}, {background}, {accessory}, {eyes} eyes"},
         "prompts template 'look': slot {eyes} in the text is not in slots (it lists gender, background"),
        (_slots(hair=[]), "prompts template 'bad': slot 'hair' has no values"),
        ({**_slots(hair=["red"]), "slots": {"hair": ["red"], "eyes": ["blue"]}},
         "prompts template 'bad': slot 'eyes' is not in the text; write {eyes} where it goes"),
        (_slots(hair=["red", " "]), "prompts template 'bad': slot 'hair' has an empty value"),
        (_slots(hair=["Dark Red", "dark-red"]),
         "prompts template 'bad': slot 'hair' values 'Dark Red' and 'dark-red' give the same id part 'dark_"),
        ({**_slots(hair=["red"]), "expectations": {"eyes": {"blue": ["blue eyes"]}}},
         "prompts template 'bad': expectations name slot 'eyes', which is not in slots"),
        ({**_slots(hair=["red"]), "expectations": {"hair": {"blue": ["blue hair"]}}},
         "prompts template 'bad': expectations name 'blue', not a value of slot 'hair'"),
        ({**_slots(hair=["red"]), "limit": 0}, "prompts template 'bad': limit=0 must be an integer >= 1"),
        ({**PORTRAIT, "id": "has space"}, "prompts template 'has space': id must be 1-40 ASCII letters"),
        ({**PORTRAIT, "text": " "}, "prompts template 'look': text is not set"),
        (_slots(a=_values(100), b=_values(100), c=_values(11)),
         "prompts template 'bad': 100 a x 100 b x 11 c make 110000 combinations, more than 100000"),
        ({**_slots(a=_values(30), b=_values(30)), "limit": 600},
         f"prompts templates expand to 600 prompts (bad: 600), more than {MAX_PROMPTS}; give them a smaller"),
    ],
)  # fmt: skip
def test_a_bad_template_is_refused_naming_it_and_its_slot(template: dict, message: str) -> None:
    _, problems = expand_templates([template])
    assert any(p.startswith(message) for p in problems), problems
    assert len(problems) == 1, problems


def test_ids_that_collide_with_the_sets_other_prompts_are_refused_naming_the_template() -> None:
    _, problems = expand_templates(
        [PORTRAIT, {**PORTRAIT, "id": "look"}], taken=["look-male-blue-black_glasses"]
    )
    assert problems == [
        "prompts template 'look': expands to the id 'look-male-blue-black_glasses', which another prompt has",
        "prompts template 'look': another template has this id; template ids must be unique",
    ]


def test_the_job_checks_and_expansion_refuse_a_bad_template_in_a_prompt_set(tmp_path) -> None:
    bad = {**PORTRAIT, "text": "bespoke, {gender}, {eyes} eyes"}
    cfg = _config(tmp_path, [], [bad])
    line = "prompts template 'look': slot {eyes} in the text is not in slots"
    assert any(p.startswith(line) for p in config_problems(cfg)), config_problems(cfg)
    with pytest.raises(ConfigError, match=r"slot \{eyes\} in the text is not in slots"):
        expand_prompt_set(cfg)


def test_expanded_prompts_are_checked_like_items(tmp_path) -> None:
    """A coordinate a slot value puts off the grid is found in the prompt it expands to."""
    template = {
        "id": "t",
        "text": "bespoke, {glasses}",
        "slots": {"glasses": ["glasses spanning x=7-30 y=11-13"]},
    }
    problems = config_problems(_config(tmp_path, [], [template]))
    assert any(
        p.startswith("prompts item 't-glasses_spanning_x_7_30_y_11_13': prompt phrase") for p in problems
    )


# --- the shipped prompt sets -----------------------------------------------------------------


@pytest.fixture()
def demo_cfg(demo_dir, tracking_uri):
    def compose(prompts: str):
        return compose_config(
            [f"paths.demo={demo_dir}", f"tracking.uri={tracking_uri}", f"prompts={prompts}"]
        )

    return compose


def test_the_variations_set_expands_checks_clean_and_is_heldout_on_the_demo(demo_cfg) -> None:
    composed = demo_cfg("variations")
    assert config_problems(composed) == []
    cfg = expand_prompt_set(composed)
    assert config_problems(cfg) == []
    items = {item.id: item for item in cfg.prompts["items"]}
    assert list(items) == [
        "colours-female-orange-light-white",
        "colours-female-orange-tan-brown",
        "colours-female-blue-tan-red",
        "colours-male-purple-light-black",
        "colours-male-purple-light-white",
        "colours-male-blue-tan-white",
        "glasses-brown-black_glasses",
        "glasses-blue-black_glasses",
    ]
    assert items["colours-female-blue-tan-red"].text == (
        "bespoke, pixel art portrait, female, blue background, tan skin, red hair"
    )
    assert list(items["glasses-blue-black_glasses"].expectations) == [
        "blue iris eyes at (9,12) and (14,12)",
        "black glasses spanning x=7-16 y=11-13",
    ]
    assert {item.split for item in items.values()} == {"heldout"}  # no sampled one is a demo caption


def test_the_demo_split_set_is_marked_in_set_and_heldout_by_the_demos_own_captions(demo_cfg) -> None:
    cfg = expand_prompt_set(demo_cfg("demo_split"))
    assert config_problems(cfg) == []
    assert {item.id: item.split for item in cfg.prompts["items"]} == {
        **{f"heldout{i}": "heldout" for i in range(1, 5)},
        **{f"inset{i}": "train" for i in range(1, 5)},
    }


def test_a_set_without_templates_keeps_its_config_as_it_was(demo_cfg) -> None:
    """No `templates` key left behind: params and job identities of existing sets don't change."""
    composed = demo_cfg("demo")
    cfg = expand_prompt_set(composed)
    with open_dict(composed.prompts):
        del composed.prompts["templates"]  # what the set held before templates existed
    assert job_config(cfg) == job_config(composed)


PORTRAIT_WORDS = "bespoke, pixel art portrait"


def test_a_job_generates_and_scores_the_expanded_prompts_with_their_splits(small_cfg, tmp_path) -> None:
    """run_job expands the set where it starts: its images and per-image rows are the templates'
    prompts, each with the split the demo's training captions give it."""
    with open_dict(small_cfg):
        small_cfg.prompts["items"] = [
            PromptConfig(
                id="caption", text=f"{PORTRAIT_WORDS}, female, orange background, light skin, gray hair"
            )
        ]
        small_cfg.prompts["templates"] = [
            PromptTemplateConfig(
                id="t",
                text=f"{PORTRAIT_WORDS}, male, {{background}} background, tan skin, white hair",
                slots={"background": ["gray", "green"]},
            )
        ]
    result = run_job(small_cfg, output_dir=tmp_path)
    store = tracking.open_store(small_cfg.tracking.uri, small_cfg.tracking.experiment)
    rows = tracking.load_table(store, result.run_id, "metrics/per_image.json")
    assert sorted((row["prompt_id"], row["split"]) for row in rows) == [
        ("caption", "train"),
        ("t-gray", "train"),  # a demo training caption too
        ("t-green", "heldout"),
    ]
    assert sorted(p.name for p in (tmp_path / "images").glob("*.png")) == [
        "caption_seed0.png",
        "t-gray_seed0.png",
        "t-green_seed0.png",
    ]
