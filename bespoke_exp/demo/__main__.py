"""python -m bespoke_exp.demo [--root DIR]: build (or reuse) the demo and say where it is."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bespoke_exp.demo.build import COMPLETE_MARKER, ensure_demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bespoke_exp.demo", description=__doc__.split(":")[1].strip()
    )
    parser.add_argument("--root", type=Path, default=None, help="build here (default: user cache)")
    args = parser.parse_args(argv)
    root = ensure_demo(args.root)
    print(f"demo ready: {root}")
    print(json.loads((root / COMPLETE_MARKER).read_text()))


if __name__ == "__main__":
    main()
