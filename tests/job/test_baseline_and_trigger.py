"""What the LoRA buys, the job side: epoch 0 is the base model with no adapter loaded (and none
left behind), one baseline run serves every LoRA strength, and `trigger=off` generates each
prompt without its trigger words at the same ids and seeds, scored against the prompt as
written. Real demo pipeline, real MLflow store."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from bespoke_exp import tracking
from bespoke_exp.config import ConfigError, compose_config
from bespoke_exp.generate import checkpoints, pipeline
from bespoke_exp.generate.checkpoints import CheckpointError, available_epochs, lora_trigger_words
from bespoke_exp.job import images as job_images
from bespoke_exp.job.identity import generation_identity
from bespoke_exp.job.run import SweepContext, run_job
from bespoke_exp.job.trigger import generated_prompts, remove_trigger_words
from tests.helpers import STEM, kohya_metadata, problems_with, write_lora


def _cfg(demo_dir, tracking_uri, *overrides: str, prompts: int = 1) -> DictConfig:
    """The demo shrunk to `prompts` prompts x one seed, two steps, 192 px."""
    cfg = compose_config(
        [
            f"paths.demo={demo_dir}",
            f"tracking.uri={tracking_uri}",
            "tracking.experiment=tests",
            "sampler.steps=2",
            "sampler.seeds=[0]",
            "sampler.width=192",
            "sampler.height=192",
            *overrides,
        ]
    )
    with open_dict(cfg):
        cfg.prompts["items"] = cfg.prompts["items"][:prompts]
    return cfg


def _run(cfg, run_id):
    return MlflowClient(cfg.tracking.uri).get_run(run_id)


def _table(cfg, run_id, name):
    return tracking.load_table(tracking.open_store(cfg.tracking.uri, "tests"), run_id, name)


# --- the base model: epoch 0 --------------------------------------------------------------


def _unet_weights(pipe) -> dict[str, torch.Tensor]:
    """The base UNet's attention projections, which the demo LoRA adapts, copied."""
    return {
        name: value.detach().clone()
        for name, value in pipe.unet.state_dict().items()
        if ".to_q.weight" in name or ".to_v.weight" in name or ".to_out.0.weight" in name
    }


def test_epoch_0_generates_with_no_adapter_reads_no_lora_file_and_leaves_the_base_as_it_was(
    demo_dir, tracking_uri, tmp_path, monkeypatch
):
    cfg = _cfg(demo_dir, tracking_uri, "prompts=seed_tests", "epoch=3")
    m = cfg.model
    pipe = pipeline.load_pipeline(m.pretrained, device=m.device, dtype=m.dtype, variant=m.variant)
    before = _unet_weights(pipe)
    assert before and pipe.get_list_adapters() == {}

    seen: list[dict] = []  # the adapters loaded when each job starts generating
    real_generate = job_images.generate

    def generate_spy(pipe_, items, settings):
        seen.append(pipe_.get_list_adapters())
        yield from real_generate(pipe_, items, settings)

    described: list = []
    real_describe = checkpoints.describe_checkpoint
    monkeypatch.setattr(job_images, "generate", generate_spy)
    monkeypatch.setattr(
        checkpoints, "describe_checkpoint", lambda *a: described.append(a) or real_describe(*a)
    )

    lora = run_job(cfg, output_dir=tmp_path / "lora")
    assert seen == [{"unet": [pipeline.ADAPTER_NAME]}] and len(described) == 1  # the spies see a LoRA job

    with open_dict(cfg):
        cfg.epoch = 0
    base = run_job(cfg, output_dir=tmp_path / "base")
    assert seen[1] == {} and len(described) == 1  # no adapter while generating, no file read
    assert pipe.get_list_adapters() == {}
    for name, value in _unet_weights(pipe).items():
        assert torch.equal(value, before[name]), name

    run = _run(cfg, base.run_id)
    assert run.info.run_name == "epoch=00 guidance=7.5"
    assert run.data.tags["baseline"] == "true" and run.data.tags["epoch"] == "0"
    assert "checkpoint_sha256" not in run.data.tags and "baseline" not in _run(cfg, lora.run_id).data.tags
    assert run.data.params["checkpoint.path"] == "none (base model)"
    assert not any(key.startswith("train.") for key in run.data.params)  # no LoRA header to report
    image = "basic_seed0.png"
    assert (tmp_path / "base" / "images" / image).read_bytes() != (
        tmp_path / "lora" / "images" / image
    ).read_bytes()


def test_one_base_model_run_serves_every_lora_scale(demo_dir, tracking_uri, tmp_path):
    cfg = _cfg(demo_dir, tracking_uri, "prompts=demo", "epoch=0", "lora_scale=0.6")
    first = run_job(cfg, output_dir=tmp_path / "a")
    assert first.status == "FINISHED"
    assert _run(cfg, first.run_id).info.run_name == "epoch=00 guidance=7.5"  # no strength: no LoRA

    tracker = tracking.connect(cfg.tracking.uri, cfg.tracking.experiment)
    parent = tracking.start_run(tracker, "sweep epoch=0 lora_scale=0.6,1.0")
    with open_dict(cfg):
        cfg.lora_scale = 1.0
    again = run_job(cfg, output_dir=tmp_path / "b", sweep=SweepContext("s", parent, 2, job_index=1))
    assert again.status == "SKIPPED" and again.run_id == first.run_id
    assert [r.info.run_id for r in tracking.sweep_runs(tracker, parent)[1]] == [first.run_id]

    # The checkpoint and strength don't count for the base model's images; for a LoRA epoch they do.
    def identity(*overrides):
        return generation_identity(compose_config([f"paths.demo={demo_dir}", *overrides]), "cpu")

    assert identity("epoch=0", "lora_scale=0.6") == identity(
        "epoch=0", "checkpoint.stem=Other", "lora_scale=2"
    )
    assert identity("epoch=1", "lora_scale=0.6") != identity("epoch=1", "lora_scale=1.0")
    assert identity("epoch=0") != identity("epoch=1")


def test_a_negative_epoch_is_refused_in_one_line_and_epoch_0_is_not(small_cfg, tmp_path):
    assert problems_with("epoch=-1") == [
        "epoch=-1 is outside 1..10 (checkpoint.epochs=10); epoch=0 is the base model without the LoRA"
    ]
    assert problems_with("epoch=0") == []
    with open_dict(small_cfg):
        small_cfg.epoch = -2
    with pytest.raises(ConfigError, match=r"epoch=-2 is outside 1\.\.10") as refused:
        run_job(small_cfg, output_dir=tmp_path)
    assert len(str(refused.value).splitlines()) == 2  # "invalid config:" and the one problem
    # lora_scale=0 is not a way to the base model: refused, pointing at epoch=0.
    (line,) = [p for p in problems_with("lora_scale=0") if "lora_scale" in p]
    assert line.endswith("use epoch=0 for the base model without the LoRA)")


def test_epoch_all_and_a_000000_file_never_mean_the_base_model(tmp_path):
    for name in (f"{STEM}-000000.safetensors", f"{STEM}-000001.safetensors", f"{STEM}.safetensors"):
        (tmp_path / name).write_bytes(b"")
    assert list(available_epochs(tmp_path, STEM, 2)) == [1, 2]


# --- the trigger axis ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words", "expected"),
    [
        (
            "TOK bespoke, 24x24 pixel grid portrait, female, purple solid background",
            ["TOK", "bespoke"],
            "24x24 pixel grid portrait, female, purple solid background",
        ),
        ("bespoke, pixel art portrait, male", ["bespoke"], "pixel art portrait, male"),
        ("TOK bespoke, pixel art", ["TOK bespoke"], "pixel art"),  # a phrase, whole
        ("Bespoke, pixel art, BESPOKE", ["bespoke"], "pixel art"),  # any case, at the end too
        ("TOK, pixel art, TOK TOK, male, TOK", ["TOK"], "pixel art, male"),  # repeated
        ("portrait of a male, bespoke", ["bespoke"], "portrait of a male"),
        ("a bespoke punk, blue hair", ["bespoke"], "a punk, blue hair"),  # inside a phrase
        ("(bespoke:1.2), pixel art", ["bespoke"], "pixel art"),  # A1111 weighting goes whole
        ("pixel art, (bespoke:1.2), [TOK], male", ["bespoke", "TOK"], "pixel art, male"),
        ("(bespoke, pixel art:1.1), male", ["bespoke"], "(pixel art:1.1), male"),
        ("bespokeness, un-bespoke, bespoke-style", ["bespoke"], "bespokeness, un-bespoke, bespoke-style"),
        ("eyes at (8,12) and (13,12), TOK", ["TOK"], "eyes at (8,12) and (13,12)"),
        ("no trigger here,  (8,12)", ["TOK", "bespoke"], "no trigger here,  (8,12)"),  # byte for byte
    ],
)
def test_trigger_words_are_removed_as_whole_words_with_their_commas(text, words, expected):
    assert remove_trigger_words(text, words) == expected


def test_trigger_words_come_from_config_else_the_lora_header(demo_dir, tmp_path):
    # The demo's header names its trigger phrase; a kohya header without one, the caption tag
    # naming its folder's concept (10_bespoke -> "TOK bespoke", not "pixel art", which every
    # caption carries too).
    demo = checkpoints.read_metadata(demo_dir / "checkpoints" / f"{STEM}-000002.safetensors")
    assert lora_trigger_words(demo) == ["bespoke"]
    assert lora_trigger_words(kohya_metadata(3)) == ["TOK bespoke"]

    # The base model has no file: the final epoch's header says.
    cfg = compose_config([f"paths.demo={demo_dir}", "prompts=demo", "epoch=0", "trigger=off"])
    base = generated_prompts(cfg, None)
    assert (base.words, base.source) == (["bespoke"], f"the header of {STEM}.safetensors")
    assert base.texts["heldout1"] == "pixel art portrait, male, blue background, dark skin, orange hair"
    assert base.unchanged == []

    with open_dict(cfg):
        cfg.checkpoint.trigger_words = ["male", "orange hair"]
    mine = generated_prompts(cfg, None)
    assert (mine.words, mine.source) == (["male", "orange hair"], "checkpoint.trigger_words")
    assert mine.texts["heldout1"] == "bespoke, pixel art portrait, blue background, dark skin"
    assert mine.unchanged == ["heldout2", "heldout3", "heldout4"]  # female, no orange hair: untouched

    with open_dict(cfg):
        cfg.checkpoint.trigger_words = None
    silent = write_lora(tmp_path / "silent.safetensors")  # a LoRA whose header says nothing
    with pytest.raises(
        CheckpointError, match=r"silent\.safetensors names no trigger word.*checkpoint\.trigger_words="
    ):
        generated_prompts(cfg, silent)
    with open_dict(cfg):
        cfg.trigger = True
    assert generated_prompts(cfg, silent).texts["heldout1"].startswith("bespoke, ")  # on: nothing read


def test_trigger_off_images_pair_with_their_trigger_on_twins(demo_dir, tracking_uri, tmp_path, capsys):
    cfg = _cfg(demo_dir, tracking_uri, "prompts=demo", "epoch=2", "sampler.seeds=[0,1]", prompts=2)
    on = run_job(cfg, output_dir=tmp_path / "on")
    with open_dict(cfg):
        cfg.trigger = False
    off = run_job(cfg, output_dir=tmp_path / "off")
    assert off.status == "FINISHED" and off.run_id != on.run_id
    assert "leaving out bespoke (the header of Bespoke_Punks_24x24_Pixel_Art-000002.safetensors)" in (
        capsys.readouterr().out
    )

    run_on, run_off = _run(cfg, on.run_id), _run(cfg, off.run_id)
    assert run_off.info.run_name == "epoch=02 guidance=7.5 trigger=off"
    assert run_on.info.run_name == "epoch=02 guidance=7.5"
    assert (run_on.data.tags["trigger"], run_off.data.tags["trigger"]) == ("1", "0")
    # Same prompt ids and seeds, scored on the same prompt as written ...
    pairs = {(r["prompt_id"], r["seed"]) for r in _table(cfg, on.run_id, "metrics/per_image.json")}
    assert pairs == {(r["prompt_id"], r["seed"]) for r in _table(cfg, off.run_id, "metrics/per_image.json")}
    assert pairs == {("heldout1", 0), ("heldout1", 1), ("heldout2", 0), ("heldout2", 1)}
    assert run_on.data.tags["scoring_identity"] == run_off.data.tags["scoring_identity"]
    # ... generated from the text less its trigger word, which the run shows ...
    assert json.loads(run_off.data.params["trigger.words"]) == ["bespoke"]
    for item in cfg.prompts["items"]:
        assert item.text.startswith("bespoke, ")
        assert run_off.data.params[f"trigger.prompt.{item.id}"] == item.text.removeprefix("bespoke, ")
    generated = _table(cfg, off.run_id, "trigger/prompts.json")
    assert [(r["prompt_id"], r["left_out"]) for r in generated] == [
        ("heldout1", "bespoke"),
        ("heldout2", "bespoke"),
    ]
    assert not any(k.startswith("trigger.") for k in run_on.data.params)
    # ... so each image differs from its twin, and only by what the word did.
    for prompt_id, seed in pairs:
        name = f"{prompt_id}_seed{seed}.png"
        assert (tmp_path / "on" / "images" / name).read_bytes() != (
            tmp_path / "off" / "images" / name
        ).read_bytes()


def test_trigger_off_is_scored_against_the_prompt_as_written(demo_dir, tracking_uri, tmp_path, capsys):
    # Words that, unlike a trigger word, carry an expectation: the background check must stay.
    words = "checkpoint.trigger_words=[TOK,bespoke,purple solid background]"
    cfg = _cfg(demo_dir, tracking_uri, "prompts=seed_tests", "epoch=1", "trigger=off", words, prompts=3)
    with open_dict(cfg):
        cfg.prompts["items"] = [cfg.prompts["items"][0], cfg.prompts["items"][2]]  # basic, accessory
        cfg.prompts["items"][1].text = "24x24 pixel art, male, black hair, green solid background"
    result = run_job(cfg, output_dir=tmp_path)
    params = _run(cfg, result.run_id).data.params
    assert params["trigger.prompt.basic"].startswith("24x24 pixel grid portrait, female, brown hair,")
    assert "prompt(s) accessory hold no trigger word" in capsys.readouterr().out
    assert params["trigger.prompt.accessory"] == "24x24 pixel art, male, black hair, green solid background"
    checks = {(r["prompt_id"], r["check"]) for r in _table(cfg, result.run_id, "metrics/checks.json")}
    assert ("basic", "background") in checks


def test_a_run_from_before_the_trigger_axis_is_reused_and_gets_its_tag(small_cfg, tmp_path):
    # A trigger-on job keeps the generation identity it had before the `trigger` key existed ...
    old_style = OmegaConf.create(OmegaConf.to_container(small_cfg))  # untyped: keys can go
    del old_style["trigger"]
    del old_style.checkpoint["trigger_words"]
    assert generation_identity(old_style, "cpu") == generation_identity(small_cfg, "cpu")
    # ... so its earlier runs are reused, and get the axis tag they lacked.
    first = run_job(small_cfg, output_dir=tmp_path / "a")
    MlflowClient(small_cfg.tracking.uri).delete_tag(first.run_id, "trigger")
    again = run_job(small_cfg, output_dir=tmp_path / "b")
    assert again.status == "SKIPPED" and again.run_id == first.run_id
    assert _run(small_cfg, first.run_id).data.tags["trigger"] == "1"
