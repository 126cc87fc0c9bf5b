"""python -m bespoke_exp.demo [--root DIR] [--train --out DIR] [--oracle]: build (or reuse)
the demo, or train it from nothing, and print the oracle's accuracy per epoch."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from bespoke_exp.demo.base_training import BaseTraining
from bespoke_exp.demo.build import COMPLETE_MARKER, ensure_demo, train_demo
from bespoke_exp.demo.training import LORA_STEM, DemoTraining


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bespoke_exp.demo", description=__doc__.split(":")[1].strip()
    )
    parser.add_argument("--root", type=Path, default=None, help="build here (default: user cache)")
    parser.add_argument(
        "--train", action="store_true", help="train base model and LoRA from nothing into --out"
    )
    parser.add_argument("--out", type=Path, help="--train: a new folder for the trained demo")
    parser.add_argument(
        "--schedule", choices=("full", "smoke"), default="full", help="--train: smoke = a few steps"
    )
    parser.add_argument(
        "--epsilon-base",
        type=Path,
        help="--train: skip the base's epsilon phase and continue from this pipeline (the shipped "
        "one came from the demo-v2 base: `git archive 43aed46 bespoke_exp/demo/weights/pipeline`)",
    )
    parser.add_argument("--device", default="cpu", help="--train / --oracle: torch device")
    parser.add_argument("--oracle", action="store_true", help="print the oracle's accuracy per epoch")
    args = parser.parse_args(argv)
    if args.train:
        if args.out is None:
            parser.error("--train needs --out DIR (a folder that does not exist yet)")
        base = BaseTraining() if args.schedule == "full" else BaseTraining.smoke()
        print(json.dumps({"base": asdict(base), "lora": asdict(DemoTraining())}))
        root = train_demo(args.out, base, DemoTraining(), args.device, epsilon_base=args.epsilon_base)
    else:
        root = ensure_demo(args.root)
    print(f"demo ready: {root}")
    print(json.loads((root / COMPLETE_MARKER).read_text()))
    if args.oracle:
        print_oracle(root, args.device)


def print_oracle(root: Path, device: str) -> None:
    from bespoke_exp.demo.oracle import DEMO_GUIDANCES, epoch_accuracies, heldout_specs
    from bespoke_exp.generate.checkpoints import available_epochs

    checkpoints = available_epochs(root / "checkpoints", LORA_STEM, DemoTraining().epochs)
    by_guidance = epoch_accuracies(root / "pipeline", checkpoints, heldout_specs(), device=device)
    print("oracle accuracy on held-out prompts (epoch 0 = base model), by guidance:")
    print("  epoch " + "".join(f"{guidance:>8}" for guidance in DEMO_GUIDANCES) + "    mean")
    for epoch in by_guidance[DEMO_GUIDANCES[0]]:
        row = [by_guidance[guidance][epoch] for guidance in DEMO_GUIDANCES]
        print(f"  {epoch:5d} " + "".join(f"{value:8.3f}" for value in row) + f"{sum(row) / len(row):8.3f}")


if __name__ == "__main__":
    main()
