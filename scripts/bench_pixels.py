"""Benchmark grid recovery and claim checking on procedurally generated punk portraits.

    python scripts/bench_pixels.py                 # 200 portraits per defect class, seed 0
    python scripts/bench_pixels.py --portraits 40 --seed 3 --size 1024 --defects smooth offset_partial

For each defect class (bespoke_exp.demo.defects: DEFECT_CLASSES, then ISSUE26_CLASSES) it
prints the share of cells recovered correctly by `recover_grid` and by plain PIL resizes
to 24x24 (NEAREST: each cell's centre pixel, BOX: its whole-cell mean), under two
measures: `snap` (the recovered colour is nearer the true colour than any other colour of
that portrait) and `@12` (within 12/255 per channel of the truth, the stricter measure of
issue 11); `worst` is the worst portrait's @12. `claims` is the share of true and false
content claims (bespoke_exp.demo.defects.claim_phrases) that `evaluate` judges right on the
same image; claims whose verdict on the exact 24x24 art is not the intended one are
dropped. Last, milliseconds per image for `recover_grid` and for one `evaluate`: CPU time
of this process (time.process_time), so other load on a shared machine does not count.
Run it single-threaded for the per-core figures: OMP_NUM_THREADS=1 taskset -c 0 ...
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from bespoke_exp.config import CONF_DIR
from bespoke_exp.demo.defects import ALL_CLASSES, apply_defect, claim_phrases
from bespoke_exp.demo.punks import render, sample_spec
from bespoke_exp.pixelart.grid import cell_accuracy, recover_grid
from bespoke_exp.scoring.evaluate import evaluate

REGIONS = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "metrics" / "default.yaml").regions)
TOLERANCE = 12  # issue 11's measure: within 12/255 per channel of the true colour


def verdicts(image: Image.Image | np.ndarray, phrases: list[str]) -> dict[str, bool]:
    """Check name -> passed, for every checked expectation the phrases state."""
    ev = evaluate(image, ", ".join(phrases), regions=REGIONS)
    return {c.name: c.passed for c in ev.checks if c.checked}


def claim_accuracy(img: Image.Image, truth: np.ndarray, true: list[str], false: list[str]) -> float:
    """Share of claims judged as on the exact art: true ones pass, false ones fail."""
    right = total = 0
    for phrases, want in ((true, True), (false, False)):
        expected = {k for k, v in verdicts(truth, phrases).items() if v == want}
        got = verdicts(img, phrases)
        right += sum(got[k] == want for k in expected)
        total += len(expected)
    return right / max(total, 1)


def bench_class(defect: str, k: int, args: argparse.Namespace) -> dict[str, list[float]]:
    rng = np.random.default_rng([args.seed, k])
    out: dict[str, list[float]] = {}
    for _ in range(args.portraits):
        spec = sample_spec(rng)
        truth = render(spec)
        img = apply_defect(truth, defect, rng, size=args.size)
        t0 = time.process_time()
        grid = np.asarray(recover_grid(img))
        row = {"ms_rec": 1e3 * (time.process_time() - t0)}
        row["snap"], row["tol"] = cell_accuracy(grid, truth), cell_accuracy(grid, truth, TOLERANCE)
        for name, method in (("near", Image.NEAREST), ("box", Image.BOX)):
            plain = np.asarray(img.resize((24, 24), method))
            row[name + "_snap"], row[name + "_tol"] = (
                cell_accuracy(plain, truth),
                cell_accuracy(plain, truth, TOLERANCE),
            )
        true, false = claim_phrases(spec, rng)
        t0 = time.process_time()
        evaluate(img, ", ".join(true), regions=REGIONS)
        row["ms_eval"] = 1e3 * (time.process_time() - t0)
        row["claims"] = claim_accuracy(img, truth, true, false)
        for key, value in row.items():
            out.setdefault(key, []).append(value)
    return out


COLUMNS = (  # (title, width, key, reducer)
    ("snap", 7, "snap", np.mean),
    ("@12", 7, "tol", np.mean),
    ("worst", 7, "tol", np.min),
    ("NEAR", 7, "near_snap", np.mean),
    ("@12", 7, "near_tol", np.mean),
    ("BOX", 7, "box_snap", np.mean),
    ("@12", 7, "box_tol", np.mean),
    ("claims", 8, "claims", np.mean),
    ("worst", 7, "claims", np.min),
    ("ms/rec", 8, "ms_rec", np.mean),
    ("ms/eval", 9, "ms_eval", np.mean),
)


def line(name: str, values: dict[str, list[float]]) -> str:
    return f"{name:<15}" + "".join(
        f"{red(values[key]):>{w}.{1 if key.startswith('ms') else 3}f}" for _, w, key, red in COLUMNS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portraits", type=int, default=200, help="portraits per defect class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=1024, help="output image size in pixels")
    parser.add_argument("--defects", nargs="*", default=list(ALL_CLASSES), choices=ALL_CLASSES)
    args = parser.parse_args()

    header = f"{'defect':<15}" + "".join(f"{title:>{w}}" for title, w, _, _ in COLUMNS)
    print(f"{args.portraits} portraits per class, {args.size}x{args.size}, seed {args.seed}")
    print(f"{'':<15}{'recover_grid':^21}{'plain NEAREST':^14}{'plain BOX':^14}{'claim checking':^15}")
    print(header)
    print("-" * len(header))
    total: dict[str, list[float]] = {}
    per_class: dict[str, dict[str, list[float]]] = {}
    for defect in args.defects:
        values = per_class[defect] = bench_class(defect, ALL_CLASSES.index(defect), args)
        for key, v in values.items():
            total.setdefault(key, []).extend(v)
        print(line(defect, values), flush=True)
    print("-" * len(header))
    print(line("all", total))
    worst = {key: min(args.defects, key=lambda d: np.mean(per_class[d][key])) for key in ("tol", "claims")}
    print(f"worst class: recover@12 {worst['tol']}, claims {worst['claims']}")


if __name__ == "__main__":
    main()
