"""Describe LoRA checkpoint files before sweeping them: epoch (kohya naming, checked against
`ss_epoch`), size, sha256, family (SDXL / SD1.x / FLUX), rank, alpha, the training settings in
the header, and warnings (gaps, mixed runs, duplicates).

    python -m bespoke_exp.checkpoints models/civitai_run/           # table, settings, warnings
    python -m bespoke_exp.checkpoints FILE.safetensors --json       # one JSON object

Exit code 2 when the path does not exist or holds no readable .safetensors file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bespoke_exp.generate import checkpoint_folder, checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bespoke_exp.checkpoints", description=__doc__.split("\n")[0]
    )
    parser.add_argument("path", type=Path, help="a checkpoint folder or one .safetensors file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        inspection = checkpoint_folder.inspect_checkpoints(args.path)
    except checkpoints.CheckpointError as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(inspection.to_dict(), indent=2))
    else:
        print(checkpoint_folder.format_inspection(inspection))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
