"""A job's scores: every image evaluated with the config's metric settings, as per-image
rows, per-check rows and job / per-prompt aggregates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from bespoke_exp.job.identity import scoring_identity
from bespoke_exp.scoring.evaluate import Evaluation, aggregate, evaluate
from bespoke_exp.scoring.expectations import ReadLimit
from bespoke_exp.scoring.memorisation import load_training_grids, training_match
from bespoke_exp.scoring.palette import load_palette, prompt_palette


@dataclass(frozen=True)
class ImageScores:
    rows: list[dict]  # one per image: prompt, seed, every metric
    checks: list[dict]  # one per image x prompt constraint
    aggregates: dict[str, float]  # job-level, plus `by_prompt/<id>/...` per prompt


@dataclass(frozen=True)
class Scorer:
    """Everything a job's scoring reads, resolved once: settings for `evaluate`, the
    training grids (memorisation), how much of each prompt the text encoder read, and the
    scoring identity they add up to."""

    settings: dict
    training: np.ndarray | None
    near_copy: float
    identity: str
    read_limits: dict[str, ReadLimit] = field(default_factory=dict)  # by prompt id; absent: all read


def make_scorer(cfg: DictConfig) -> Scorer:
    m = cfg.metrics
    cells = int(m.cells)
    train_dir = cfg.checkpoint.train_dir
    training = load_training_grids(train_dir, cells) if train_dir else None
    palette = resolve_palette(cfg, training)
    settings = {
        "cells": cells,
        "palette": palette,
        "weights": OmegaConf.to_container(m.weights, resolve=True),
        "regions": OmegaConf.to_container(m.regions, resolve=True),
        "tolerance": int(m.tolerance),
        "pass_share": float(m.pass_share),
    }
    limits = read_limits(cfg)
    identity = scoring_identity(cfg, palette, training, {k: v.chars for k, v in limits.items()})
    return Scorer(settings, training, float(m.near_copy), identity, limits)


def read_limits(cfg: DictConfig) -> dict[str, ReadLimit]:
    """With `sampler.long_prompts=truncate`, how much of each over-long prompt the text encoders
    read (from the model's tokenizers); with `chunk` they read every token, so nothing."""
    sampler = cfg.sampler
    if sampler.long_prompts != "truncate":
        return {}
    from bespoke_exp.generate.tokens import truncated_prompts  # torch: only when it is needed

    cut = truncated_prompts(
        cfg.model.pretrained,
        {p.id: p.text for p in cfg.prompts["items"]},
        weighting=sampler.prompt_weighting,
    )
    return {
        prompt_id: ReadLimit(
            chars, f"beyond the {tokens} tokens the text encoder reads (sampler.long_prompts=truncate)"
        )
        for prompt_id, (chars, tokens) in cut.items()
    }


def resolve_palette(cfg: DictConfig, training: np.ndarray | None) -> np.ndarray:
    """The reference palette `metrics.palette` names (see conf/metrics/default.yaml)."""
    source = cfg.metrics.palette
    source = OmegaConf.to_container(source) if OmegaConf.is_list(source) else source
    if source == "auto":
        source = "train_dir" if training is not None else "prompts"
    if source == "train_dir":
        if training is None:
            raise ValueError("metrics.palette=train_dir needs checkpoint.train_dir (the training images)")
        return np.unique(training.reshape(-1, 3), axis=0)
    if source == "prompts":
        return prompt_palette([str(p.text) for p in cfg.prompts["items"]], int(cfg.metrics.cells))
    return load_palette(source, int(cfg.metrics.cells))


def score_images(
    cfg: DictConfig, generated: dict[tuple[str, int], Image.Image], scorer: Scorer
) -> ImageScores:
    """Pixel metrics and prompt checks for every (prompt id, seed) -> image."""
    prompts = {p.id: p for p in cfg.prompts["items"]}
    rows, checks, by_prompt = [], [], {}
    for (prompt_id, seed), image in generated.items():
        prompt = prompts[prompt_id]
        evaluation = evaluate(
            image,
            prompt.text,
            expectations=list(prompt.expectations),
            read_limit=scorer.read_limits.get(prompt_id),
            **scorer.settings,
        )
        if scorer.training is not None:
            match = training_match(evaluation.grid, scorer.training)
            evaluation.metrics["memorisation/nearest_match"] = match
            evaluation.metrics["memorisation/near_copy"] = float(match >= scorer.near_copy)
        by_prompt.setdefault(prompt_id, []).append(evaluation)
        rows.append(
            {
                "prompt_id": prompt_id,
                "split": prompt.split or "",
                "seed": seed,
                **evaluation.metrics,
            }
        )
        checks += _check_rows(prompt_id, seed, evaluation)
    aggregates = aggregate([e for evs in by_prompt.values() for e in evs])
    for prompt_id, evaluations in by_prompt.items():
        aggregates.update({f"by_prompt/{prompt_id}/{k}": v for k, v in aggregate(evaluations).items()})
    return ImageScores(rows=rows, checks=checks, aggregates=aggregates)


def _check_rows(prompt_id: str, seed: int, evaluation: Evaluation) -> list[dict]:
    return [
        {
            "prompt_id": prompt_id,
            "seed": seed,
            "check": c.name,
            "checked": c.checked,
            "passed": c.passed,
            "passed_tolerant": c.passed_tolerant,
            "detail": c.detail,
        }
        for c in evaluation.checks
    ]
