"""The demo's ground truth, independent of the harness's metrics: held-out portrait specs,
the exact 24x24 art each one asks for, and how much of it a generated picture got right.

The harness never sees this module. Its choice of epoch is checked against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bespoke_exp.config.schema import SamplerConfig
from bespoke_exp.demo import punks
from bespoke_exp.demo.base_training import RESOLUTION
from bespoke_exp.demo.training import DemoTraining, training_specs
from bespoke_exp.pixelart.grid import cell_accuracy, recover_grid

HELDOUT_SEED = 2027
# Levels (of 255) per channel within which a recovered cell counts as the target colour:
# the named colours the portraits use are all further apart than this.
TOLERANCE = 40
# The guidance the README's demo sweep uses: this small model follows its prompts at low
# guidance, and at SDXL's usual 5-10 its colours overshoot.
DEMO_GUIDANCES = (1.0, 1.5, 2.0)


def heldout_specs(count: int = 4, training: DemoTraining = DemoTraining()) -> list[punks.PunkSpec]:
    """Portraits the LoRA never saw: each a new combination of background, hair and skin
    (every one of those colours does appear in the training images), no two sharing a
    background."""
    trained = training_specs(training)
    seen = {(s.background, s.hair, s.skin) for s in trained}
    colours = {c for s in trained for c in (s.background, s.hair, s.skin)}
    rng = np.random.default_rng(HELDOUT_SEED)
    specs: list[punks.PunkSpec] = []
    while len(specs) < count:
        spec = punks.house_spec(rng)
        new = (spec.background, spec.hair, spec.skin) not in seen
        if (
            new
            and {spec.background, spec.hair, spec.skin} <= colours
            and spec.background not in {s.background for s in specs}
        ):
            specs.append(spec)
    return specs


def inset_specs(count: int = 4, training: DemoTraining = DemoTraining()) -> list[punks.PunkSpec]:
    """Portraits the LoRA was trained on, whose captions are exactly the prompts
    (`punks.lora_caption`): the first `count` training images whose caption names the
    background (the first `captions_without_background` leave it out)."""
    captioned = training_specs(training)[training.captions_without_background :]
    if count > len(captioned):
        raise ValueError(f"the demo LoRA has {len(captioned)} captions naming their background, not {count}")
    return captioned[:count]


def oracle_accuracy(image: Image.Image | np.ndarray, spec: punks.PunkSpec) -> float:
    """Share of the 576 cells whose recovered colour is the target's (0 when no grid can
    be recovered at all)."""
    try:
        cells = np.asarray(recover_grid(image, punks.CELLS))
    except (ValueError, RuntimeError):
        return 0.0
    return cell_accuracy(cells, punks.render(spec), tolerance=TOLERANCE)


def epoch_accuracies(
    pipeline_dir: Path,
    checkpoints: dict[int, Path],
    specs: Sequence[punks.PunkSpec],
    *,
    guidances: Sequence[float] = DEMO_GUIDANCES,
    seeds: Sequence[int] = (0, 1),
    steps: int = 12,
    device: str = "cpu",
) -> dict[float, dict[int, float]]:
    """Mean oracle accuracy per guidance and epoch over every spec x seed, generated through
    the harness's own loading path (epoch 0 is the base model without a LoRA). Each LoRA is
    loaded once and drawn at every guidance."""
    from bespoke_exp.generate import pipeline as pl
    from bespoke_exp.generate.sampling import GenerationItem, generate

    pipe = pl.load_pipeline(str(pipeline_dir), device=device, dtype="float32")
    settings = SamplerConfig(
        steps=steps,
        guidance=guidances[0],
        width=RESOLUTION,
        height=RESOLUTION,
        seeds=list(seeds),
        batch_size=len(specs) * len(seeds),
    )
    items = [
        GenerationItem(str(i), punks.lora_caption(spec), seed)
        for i, spec in enumerate(specs)
        for seed in seeds
    ]
    pl.set_scheduler(pipe, settings.scheduler)  # the pipeline is shared: as a job sets it
    accuracies: dict[float, dict[int, float]] = {guidance: {} for guidance in guidances}
    for epoch, path in {0: None, **checkpoints}.items():
        with pl.lora_applied(pipe, path):
            for guidance in guidances:
                scores = [
                    oracle_accuracy(image, specs[int(item.prompt_id)])
                    for item, image in generate(pipe, items, replace(settings, guidance=guidance))
                ]
                accuracies[guidance][epoch] = float(np.mean(scores))
    return accuracies
