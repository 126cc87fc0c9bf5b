"""Prompts read as the user's tools read them: SDXL long prompts in 75-token chunks (or
truncated), A1111 weighting and clip skip, on a real SDXL-architecture pipeline (two CLIP
tokenizers and text encoders; random weights: only how text becomes conditioning matters here);
and checks of what a truncating encoder never read reported unchecked, not scored."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bespoke_exp.config import CONF_DIR, compose_config
from bespoke_exp.config.schema import SamplerConfig
from bespoke_exp.generate import pipeline as pl
from bespoke_exp.generate import prompt_chunks as pc
from bespoke_exp.generate import prompt_encoding as pe
from bespoke_exp.generate.sampling import GenerationItem, _batches, generate
from bespoke_exp.generate.tokens import load_tokenizers, truncated_prompts
from bespoke_exp.job.scores import make_scorer, score_images
from tests.helpers import problems_with

SEED_PROMPTS = OmegaConf.load(CONF_DIR / "prompts" / "seed_tests.yaml")
ADVANCED = next(p.text for p in SEED_PROMPTS["items"] if p.id == "advanced")  # the user's 172-token prompt
SHORT = "TOK bespoke, 24x24 pixel grid portrait, orange solid background, black pupils fixed at (8,12)"
SETTINGS = SamplerConfig(
    scheduler="euler", steps=2, guidance=7.5, width=64, height=64, negative_prompt="", batch_size=2
)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return pl.load_pipeline(str(tiny_pipeline_dir), device="cpu", dtype="float32")


@pytest.fixture(params=["eos", "!"])
def sdxl_padding(request, pipe):
    """The demo pads both encoders' tokens with EOS; real SDXL's CLIP-G tokenizer pads with "!"."""
    saved = pipe.tokenizer_2
    if request.param != "eos":
        pipe.tokenizer_2 = copy.deepcopy(saved)
        pipe.tokenizer_2.pad_token = request.param
        assert pipe.tokenizer_2.pad_token_id != pipe.tokenizer_2.eos_token_id
    yield request.param
    pipe.tokenizer_2 = saved


def _conditioning(pipe, prompts: list[str], settings: SamplerConfig, n_chunks: int = 1) -> dict:
    with torch.inference_mode():
        return pe.prompt_conditioning(pipe, prompts, settings, n_chunks)


def _diffusers(pipe, prompts: list[str], negative: str) -> tuple:
    """The pipeline's own encode_prompt, called as `pipe(prompt=..., negative_prompt=...)` calls it."""
    with torch.inference_mode():
        return pipe.encode_prompt(
            prompts, device=pipe.device, negative_prompt=[negative] * len(prompts) if negative else None
        )


def _first_tokens(pipe, text: str, count: int) -> str:
    """The leading part of `text` that is exactly `count` tokens."""
    tokenizer = pipe.tokenizer
    ends = [
        end
        for _, end in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    ]
    prefix = text[: ends[count - 1]]
    assert len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) == count
    return prefix


@pytest.mark.parametrize("negative", ["", "blurry, smooth gradient"])
@pytest.mark.parametrize(
    ("prompt_kind", "changes"),
    [
        ("brackets", {}),  # weighting off: "(8,12)" is plain text, as diffusers reads it
        ("brackets", {"long_prompts": "truncate"}),
        ("no_syntax", {"prompt_weighting": True}),  # weighting on, but nothing to weigh
        ("75_tokens", {}),  # the longest prompt that still fits one 77-token pass
    ],
)
def test_a_prompt_that_fits_gives_encode_prompts_exact_conditioning(
    pipe, sdxl_padding, negative, prompt_kind, changes
):
    prompts = {
        "brackets": [SHORT, "bespoke, male, blue solid background"],
        "no_syntax": ["TOK bespoke, 24x24 pixel grid portrait, orange solid background", "bespoke, male"],
        "75_tokens": [_first_tokens(pipe, ADVANCED, 75), SHORT],
    }[prompt_kind]
    settings = replace(SETTINGS, negative_prompt=negative, **changes)
    embeds, negative_embeds, pooled, negative_pooled = _diffusers(pipe, prompts, negative)
    ours = _conditioning(pipe, prompts, settings)
    assert torch.equal(ours["prompt_embeds"], embeds)
    assert torch.equal(ours["pooled_prompt_embeds"], pooled)
    if negative:
        assert torch.equal(ours["negative_prompt_embeds"], negative_embeds)
        assert torch.equal(ours["negative_pooled_prompt_embeds"], negative_pooled)
    else:  # nothing passed: the pipeline zeroes them itself (force_zeros_for_empty_prompt), as before
        assert "negative_prompt_embeds" not in ours and not negative_embeds.any()


def test_generate_gives_the_images_the_pipeline_gave_from_prompt_strings(pipe):
    items = [GenerationItem("p", SHORT, seed) for seed in (0, 1)]
    settings = replace(SETTINGS, negative_prompt="blurry")
    ours = [np.asarray(image) for _, image in generate(pipe, items, settings)]
    with torch.inference_mode():
        before = pipe(
            prompt=[SHORT, SHORT],
            negative_prompt=["blurry", "blurry"],
            num_inference_steps=2,
            guidance_scale=7.5,
            width=64,
            height=64,
            generator=[torch.Generator().manual_seed(seed) for seed in (0, 1)],
            output_type="pil",
        ).images
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(ours, before))


def test_text_after_token_77_counts_in_chunk_mode_and_not_in_truncate_mode(pipe):
    assert "blue collar" in ADVANCED[len(_first_tokens(pipe, ADVANCED, 75)) :]  # past what one pass reads
    changed = ADVANCED.replace("blue collar", "red collar")
    for mode, differs in (("chunk", True), ("truncate", False)):
        settings = replace(SETTINGS, long_prompts=mode)
        n_chunks = pe.prompt_chunk_count(pipe, ADVANCED, settings)
        one, other = (_conditioning(pipe, [text], settings, n_chunks) for text in (ADVANCED, changed))
        assert (n_chunks > 1) is (mode == "chunk") and one["prompt_embeds"].shape[1] == 77 * n_chunks
        assert (not torch.equal(one["prompt_embeds"], other["prompt_embeds"])) is differs, mode
        # The pooled embedding is the first chunk's, which both prompts share.
        assert torch.equal(one["pooled_prompt_embeds"], other["pooled_prompt_embeds"])


def test_a_short_negative_prompt_is_padded_with_empty_chunks_to_the_prompts_length(pipe):
    settings = replace(SETTINGS, negative_prompt="blurry")
    n_chunks = pe.prompt_chunk_count(pipe, ADVANCED, settings)
    long = _conditioning(pipe, [ADVANCED], settings, n_chunks)
    negative = long["negative_prompt_embeds"]
    assert negative.shape == long["prompt_embeds"].shape
    with torch.inference_mode():
        alone, alone_pooled = pe.encode_prompts(pipe, ["blurry"], settings)
        empty, _ = pe.encode_prompts(pipe, [""], settings)
    assert torch.equal(negative[:, :77], alone)
    assert torch.equal(long["negative_pooled_prompt_embeds"], alone_pooled)
    assert all(torch.equal(negative[:, 77 * i : 77 * (i + 1)], empty) for i in range(1, n_chunks))
    # and the other way round: a long negative prompt pads a short prompt to its length
    short_with_long_negative = replace(settings, negative_prompt=ADVANCED)
    (_, batch_chunks), *_ = _batches(pipe, [GenerationItem("s", SHORT, 0)], short_with_long_negative)
    assert n_chunks > 1 and batch_chunks == n_chunks


def test_batching_a_long_prompt_with_a_short_one_changes_neither_image(pipe):
    items = [GenerationItem("long", ADVANCED, 0), GenerationItem("short", SHORT, 0)]
    together = [np.asarray(image, np.int16) for _, image in generate(pipe, items, SETTINGS)]
    alone = [np.asarray(image, np.int16) for item in items for _, image in generate(pipe, [item], SETTINGS)]
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(together, alone))


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # A1111's own doctests of parse_prompt_attention (modules/prompt_parser.py)
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55)]
            + [(", sun, ", 1.1), ("sky", 1.4641), (".", 1.1)],
        ),
    ],
)
def test_weighting_syntax_is_parsed_as_a1111_parses_it(text, expected):
    fragments = pc.parse_weights(text)
    assert [f.text for f in fragments] == [t for t, _ in expected]
    assert [f.weight for f in fragments] == pytest.approx([w for _, w in expected])
    # every character still knows where it came from (escapes drop their backslash)
    assert all(text[s] == c for f in fragments for c, s in zip(f.text, f.sources))


def test_weighting_scales_the_weighted_tokens_and_keeps_the_mean_as_a1111_does(pipe):
    on = replace(SETTINGS, prompt_weighting=True)
    weighted = _conditioning(pipe, ["(red:1.5) hair, blue eyes"], on)["prompt_embeds"]
    plain = _conditioning(pipe, ["red hair, blue eyes"], on)["prompt_embeds"]
    as_text = _conditioning(pipe, ["(red:1.5) hair, blue eyes"], SETTINGS)["prompt_embeds"]
    assert not torch.equal(as_text, plain)  # weighting off: the brackets are tokens
    red = len(pipe.tokenizer("red", add_special_tokens=False)["input_ids"])
    width = pipe.text_encoder.config.hidden_size  # CLIP-L's columns, then CLIP-G's: each rescaled apart
    for z, w in ((plain[..., :width], weighted[..., :width]), (plain[..., width:], weighted[..., width:])):
        factors = torch.ones(77)
        factors[1 : 1 + red] = 1.5  # after BOS
        expected = z * factors[:, None]
        expected *= z.mean() / expected.mean()
        assert torch.allclose(w, expected, atol=1e-6)


def test_clip_skip_counts_layers_as_a1111_does(pipe):
    def embeds(skip):
        return _conditioning(pipe, [SHORT], replace(SETTINGS, clip_skip=skip))["prompt_embeds"]

    # A1111's "clip skip 2" (Pony's setting) is SDXL's own penultimate layer, not diffusers' clip_skip=2.
    assert torch.equal(embeds(2), embeds(None))
    assert not torch.equal(embeds(1), embeds(None)) and not torch.equal(embeds(3), embeds(None))
    layers = pipe.text_encoder.config.num_hidden_layers
    with pytest.raises(
        ValueError,
        match=rf"sampler.clip_skip={layers + 1} is more layers than CLIPTextModel has \({layers}\)",
    ):
        embeds(layers + 1)


def test_a1111_chunks_move_a_phrase_cut_near_the_end_to_the_next_chunk():
    comma = 9

    def sizes(ids):
        tokens = pc.Tokens(ids, [1.0] * len(ids))
        return [len(c[0]) for c in pc.chunk_tokens(tokens, mode="chunk", comma_id=comma)]

    words = [1] * 80
    assert sizes(words) == [75, 5]
    assert sizes(words[:70] + [comma] + words[:9]) == [71, 9]  # comma 4 tokens back: cut after it
    assert sizes(words[:50] + [comma] + words[:29]) == [75, 5]  # 25 back: too far, cut at 75
    assert sizes(words[:75]) == [75] and sizes([]) == [0]
    assert [
        len(c[0]) for c in pc.chunk_tokens(pc.Tokens(words, [1.0] * 80), mode="truncate", comma_id=comma)
    ] == [75]


def _truncate_cfg(demo_dir: Path, pipeline_dir: Path, mode: str):
    """The demo's config, its model the pipeline in `pipeline_dir`, prompts read in `mode`."""
    overrides = [f"paths.demo={demo_dir}", f"model.pretrained={pipeline_dir}", "prompts=seed_tests"]
    return compose_config([*overrides, f"sampler.long_prompts={mode}"])


def test_checks_beyond_what_a_truncating_encoder_reads_are_unchecked_not_scored(
    pipe, demo_dir, tiny_pipeline_dir
):
    image = np.random.default_rng(0).integers(0, 255, (192, 192, 3), dtype=np.uint8)
    rows, identities = {}, {}
    for mode in ("chunk", "truncate"):
        cfg = _truncate_cfg(demo_dir, tiny_pipeline_dir, mode)
        scorer = make_scorer(cfg)
        scores = score_images(cfg, {("advanced", 0): image, ("basic", 0): image}, scorer)
        rows[mode] = {(row["prompt_id"], row["check"]): row for row in scores.checks}
        identities[mode] = scorer.identity
    chunk, truncate = rows["chunk"], rows["truncate"]
    reason = "beyond the 77 tokens the text encoder reads (sampler.long_prompts=truncate)"
    read = len(_first_tokens(pipe, ADVANCED, 75))  # the prompt's characters one pass reads
    start = 0
    for phrase in ADVANCED.split(", "):  # the prompt's phrases ("(8,12)" has no space)
        end, start = start + len(phrase), start + len(phrase) + 2
        name = ("advanced", f"unchecked:{phrase}")
        assert name not in chunk  # chunk mode reads everything: every phrase is checked as parsed
        if end <= read:
            assert name not in truncate, phrase  # read: checked as before
        else:
            partly = "partly " if end - len(phrase) < read else ""
            assert truncate[name]["checked"] is False and truncate[name]["detail"] == partly + reason
    assert chunk[("advanced", "collar@y=20-22")]["checked"] and ("advanced", "collar@y=20-22") not in truncate
    assert truncate[("advanced", "background")]["checked"]
    basic = [key for key in chunk if key[0] == "basic"]  # a short prompt: the same checks either way
    assert basic and all(truncate[key]["checked"] == chunk[key]["checked"] for key in basic)
    assert identities["truncate"] != identities["chunk"]


def test_the_read_limit_is_where_the_75th_token_ends(pipe, tiny_pipeline_dir):
    cut = truncated_prompts(str(tiny_pipeline_dir), {"advanced": ADVANCED, "short": SHORT})
    assert set(cut) == {"advanced"} and cut["advanced"][1] == 77
    assert ADVANCED[: cut["advanced"][0]] == _first_tokens(pipe, ADVANCED, 75)
    # Scoring may run before (or without) the pipeline: the tokenizers read from its folder agree.
    unloaded = str(tiny_pipeline_dir) + "/"  # another key than the loaded pipeline's
    assert truncated_prompts(unloaded, {"advanced": ADVANCED}) == {"advanced": cut["advanced"]}
    assert all(t not in pipe.components.values() for t in load_tokenizers(unloaded))
    # With weighting on, syntax is no token: the cut lands on the same words, later in the text.
    weighted = "(" + ADVANCED.replace("(", "\\(").replace(")", "\\)") + ")"
    cut_weighted = truncated_prompts(str(tiny_pipeline_dir), {"w": weighted}, weighting=True)["w"][0]
    assert cut_weighted > cut["advanced"][0]
    assert weighted[1:cut_weighted].replace("\\(", "(").replace("\\)", ")") == ADVANCED[: cut["advanced"][0]]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sampler.long_prompts=paged", "sampler.long_prompts='paged' must be chunk"),
        ("sampler.prompt_weighting=maybe", "sampler.prompt_weighting='maybe' must be true or false"),
        (
            "sampler.clip_skip=0",
            "sampler.clip_skip=0 must be null (the model's own layer) or an integer >= 1",
        ),
        ("sampler.clip_skip=two", "sampler.clip_skip='two' must be null"),
    ],
)
def test_bad_prompt_reading_settings_are_refused_one_line_each(demo_dir, override, message):
    problems = problems_with(f"paths.demo={demo_dir}", override)
    assert [p for p in problems if p.startswith(message)] and len(
        [p for p in problems if "sampler." in p]
    ) == 1
