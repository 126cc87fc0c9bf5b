"""Where the choice stands: which combinations still contend with the best, and whether what is
left between them matters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bespoke_exp.analysis.confirmation import standing
from bespoke_exp.config.schema import AnalysisConfig


def _images(means: dict[tuple[int, float], float], seeds: int = 4, noise: float = 0.02) -> pd.DataFrame:
    """4 prompts x `seeds` seeds per combination, paired: each item has its own difficulty."""
    rng = np.random.default_rng(0)
    difficulty = {(p, s): rng.normal(0, 0.1) for p in "abcd" for s in range(seeds)}
    rows = [
        {
            "run_id": f"e{epoch}g{guidance}",
            "epoch": epoch,
            "guidance": guidance,
            "prompt_id": p,
            "seed": s,
            "split": "heldout",
            "score": mean + difficulty[p, s] + rng.normal(0, noise),
        }
        for (epoch, guidance), mean in means.items()
        for (p, s) in difficulty
    ]
    return pd.DataFrame(rows)


def test_a_clear_winner_settles_the_epoch_and_then_the_guidance() -> None:
    images = _images({(1, 1.5): 0.4, (2, 1.0): 0.45, (2, 1.5): 0.7, (3, 1.5): 0.45})
    now = standing(images, AnalysisConfig(), margin=0.02)
    assert now.decision == "combination" and now.resolved and now.settled and not now.epoch_tied
    assert now.best["epoch"] == 2 and now.best["guidance"] == 1.5
    assert now.combinations() == [{"epoch": 2, "guidance": 1.5}]
    assert now.sentence().startswith("The epoch is settled: epoch 2 beats every other beyond noise.")


def test_two_close_epochs_are_rerun_at_every_guidance_and_are_a_tie_only_within_the_margin() -> None:
    images = _images(
        {(1, 1.0): 0.3, (1, 1.5): 0.3, (2, 1.0): 0.6, (2, 1.5): 0.6, (3, 1.0): 0.6, (3, 1.5): 0.6}
    )
    strict = standing(images, AnalysisConfig(), margin=0.0)
    assert strict.decision == "epoch" and not strict.resolved
    assert len(strict.contenders) == 1 and {strict.best["epoch"], strict.contenders[0]["epoch"]} == {2, 3}
    assert sorted((c["epoch"], c["guidance"]) for c in strict.combinations()) == [
        (2, 1.0),
        (2, 1.5),
        (3, 1.0),
        (3, 1.5),
    ]  # epoch 1 is beaten; the contending epochs at every guidance, so their means stay comparable
    loose = standing(images, AnalysisConfig(), margin=0.2)
    assert loose.decision == "combination" and loose.epoch_tied
    assert "The epoch is a practical tie" in loose.sentence()


def test_once_the_epoch_is_settled_the_guidances_at_it_contend() -> None:
    images = _images({(1, 1.0): 0.3, (2, 1.0): 0.6, (2, 1.5): 0.6, (1, 1.5): 0.3})
    now = standing(images, AnalysisConfig(), margin=0.0)
    assert now.decision == "combination" and not now.resolved
    assert now.axes == ("guidance",)
    assert sorted(c["guidance"] for c in now.combinations()) == [1.0, 1.5]
    assert {c["epoch"] for c in now.combinations()} == {2}
