"""The scorer a job builds: the reference palette is the training images' colours, or the colours
the prompts name, never the demo generator's own palette."""

from __future__ import annotations

import numpy as np

from bespoke_exp.config import compose_config
from bespoke_exp.job.scores import make_scorer
from bespoke_exp.pixelart.colors import PROTOTYPES


def test_a_real_run_never_scores_against_the_demo_generator_palette() -> None:
    cfg = compose_config(["experiment=bespoke_civitai"])
    assert cfg.metrics.palette == "auto" and cfg.checkpoint.train_dir is None
    palette = {tuple(c) for c in make_scorer(cfg).settings["palette"]}
    named = {PROTOTYPES[n] for n in ("orange", "purple", "green", "black", "pink", "blue", "brown", "tan")}
    assert named <= palette  # the colours the seed prompts name ...
    assert PROTOTYPES["red"] not in palette and PROTOTYPES["yellow"] not in palette  # ... and no others


def test_with_training_images_the_palette_is_theirs(demo_dir) -> None:
    cfg = compose_config([f"paths.demo={demo_dir}"])
    scorer = make_scorer(cfg)
    assert np.array_equal(scorer.settings["palette"], np.unique(scorer.training.reshape(-1, 3), axis=0))
