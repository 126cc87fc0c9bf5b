"""A generated picture that copies a training image is recognised as a near copy."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bespoke_exp.demo.training import DemoTraining
from bespoke_exp.pixelart.grid import recover_grid
from bespoke_exp.scoring.memorisation import load_training_grids, training_match


def test_a_training_image_scores_as_a_near_copy(demo_dir):
    training = load_training_grids(str(demo_dir / "train"), 24)
    assert training.shape == (DemoTraining().images, 24, 24, 3)
    with Image.open(next((demo_dir / "train").glob("*_bespoke")) / "0003.png") as art:
        upscaled = np.asarray(art.convert("RGB").resize((256, 256), Image.NEAREST))
    assert training_match(np.asarray(recover_grid(upscaled, 24)), training) == 1.0
    noise = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    assert training_match(noise, training) < 0.2
