"""The embedded demo: a tiny SDXL-architecture pipeline and ten kohya-format LoRA epochs
trained on procedural punks, shipped in `weights/` so the whole harness runs offline
before anyone downloads 7 GB.

    python -m bespoke_exp.demo                    # build (or reuse) the demo, print where it lives
    python -m bespoke_exp.demo --oracle           # ... and the ground truth per epoch
    python -m bespoke_exp.demo --train --out DIR  # train it all again from nothing

The base model (`base_training`) learnt punks from soft, off-grid renders with loose
captions, so it draws them roughly. The LoRA (`training`) was trained on a small kohya
training folder of crisp 24x24 portraits, three of whose captions leave the background out:
epoch 1 is half-learnt, epoch 2 draws held-out prompts best, and from then on the backgrounds
the prompts name give way to ones from the training set (see the README). `oracle`
renders the exact portrait each held-out prompt asks for: the ground truth the harness's
choice of epoch is checked against. `punks` (the procedural portraits) and `defects`
(diffusion-style damage) are the ground truth the scoring is tested against.
"""
