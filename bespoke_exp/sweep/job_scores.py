"""A job's scores: every image evaluated with the config's metric settings, as per-image
rows, per-check rows and job / per-prompt aggregates."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf
from PIL import Image

from bespoke_exp.scoring.evaluate import Evaluation, aggregate, evaluate
from bespoke_exp.scoring.memorisation import load_training_grids, training_match


@dataclass(frozen=True)
class ImageScores:
    rows: list[dict]  # one per image: prompt, seed, every metric
    checks: list[dict]  # one per image x prompt constraint
    aggregates: dict[str, float]  # job-level, plus `by_prompt/<id>/...` per prompt


def score_images(cfg: DictConfig, generated: dict[tuple[str, int], Image.Image]) -> ImageScores:
    """Pixel metrics and prompt checks for every (prompt id, seed) -> image."""
    m = cfg.metrics
    settings = {
        "cells": int(m.cells),
        "palette": m.palette,
        "weights": OmegaConf.to_container(m.weights, resolve=True),
        "regions": OmegaConf.to_container(m.regions, resolve=True),
        "tolerance": int(m.tolerance),
        "pass_share": float(m.pass_share),
    }
    prompts = {str(p.id): p for p in cfg.prompts["items"]}
    train_dir = cfg.checkpoint.get("train_dir")
    training = load_training_grids(str(train_dir), int(m.cells)) if train_dir else None
    rows, checks, by_prompt = [], [], {}
    for (prompt_id, seed), image in generated.items():
        prompt = prompts[prompt_id]
        expectations = [str(e) for e in prompt.get("expectations") or []]
        evaluation = evaluate(image, str(prompt.text), expectations=expectations, **settings)
        if training is not None:
            match = training_match(evaluation.grid, training)
            evaluation.metrics["memorisation/nearest_match"] = match
            evaluation.metrics["memorisation/near_copy"] = float(match >= float(m.near_copy))
        by_prompt.setdefault(prompt_id, []).append(evaluation)
        rows.append(
            {
                "prompt_id": prompt_id,
                "split": str(prompt.get("split", "")),
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
