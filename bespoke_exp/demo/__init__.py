"""The embedded demo: a tiny SDXL-architecture pipeline and ten kohya-format LoRA epoch
checkpoints trained on procedural punks, built locally so the whole harness runs
offline before anyone downloads 7 GB.

    python -m bespoke_exp.demo            # build (or reuse) the demo, print where it lives

The images the demo model makes are not art: the model is tiny and barely trained.
Everything around it (loading, LoRA switching, tracking) is the real path. `punks`
(the procedural portraits) and `defects` (diffusion-style damage) are the ground truth
that the scoring is tested against.
"""
