"""Benchmark grid recovery and evaluation on procedurally generated punk portraits.

    python scripts/bench_pixels.py                 # 200 portraits per defect class, seed 0
    python scripts/bench_pixels.py --portraits 50 --seed 3 --size 1024

For each defect class (bespoke_exp.demo.defects) it prints the share of cells recovered
correctly by `recover_grid` and by plain PIL resizes to 24x24 (NEAREST, BOX), and the
milliseconds per image for `recover_grid` and `evaluate`. A cell is correct when its
recovered colour is nearer to the true colour than to any other colour of that
portrait (i.e. snapping to the portrait's own palette gives the truth back).
Run it single-threaded for the per-core figures: OMP_NUM_THREADS=1 taskset -c 0 ...
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from bespoke_exp.config import CONF_DIR
from bespoke_exp.demo.defects import DEFECT_CLASSES, apply_defect
from bespoke_exp.demo.punks import caption, render, sample_spec
from bespoke_exp.pixelart.grid import cell_accuracy, recover_grid
from bespoke_exp.scoring.evaluate import evaluate

REGIONS = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "metrics" / "default.yaml").regions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portraits", type=int, default=200, help="portraits per defect class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=1024, help="output image size in pixels")
    parser.add_argument("--eval-every", type=int, default=4, help="time evaluate() on every n-th image")
    args = parser.parse_args()

    header = f"{'defect':<10}{'recover':>9}{'worst':>8}{'NEAREST':>9}{'BOX':>8}"
    header += f"{'ms/recover':>12}{'ms/evaluate':>13}"
    print(f"{args.portraits} portraits per class, {args.size}x{args.size}, seed {args.seed}")
    print(header)
    print("-" * len(header))
    all_acc, rec_ms, eval_ms = [], [], []
    for k, defect in enumerate(DEFECT_CLASSES):
        rng = np.random.default_rng([args.seed, k])
        acc, near, box, t_rec, t_eval = [], [], [], [], []
        for i in range(args.portraits):
            spec = sample_spec(rng)
            truth = render(spec)
            img = apply_defect(truth, defect, rng, size=args.size)
            t0 = time.perf_counter()
            grid = np.asarray(recover_grid(img))
            t_rec.append(time.perf_counter() - t0)
            acc.append(cell_accuracy(grid, truth))
            near.append(cell_accuracy(np.asarray(img.resize((24, 24), Image.NEAREST)), truth))
            box.append(cell_accuracy(np.asarray(img.resize((24, 24), Image.BOX)), truth))
            if i % args.eval_every == 0:
                t0 = time.perf_counter()
                evaluate(img, caption(spec), regions=REGIONS)
                t_eval.append(time.perf_counter() - t0)
        all_acc += acc
        rec_ms += t_rec
        eval_ms += t_eval
        print(
            f"{defect:<10}{np.mean(acc):>9.4f}{np.min(acc):>8.3f}{np.mean(near):>9.4f}{np.mean(box):>8.4f}"
            f"{1e3 * np.mean(t_rec):>12.1f}{1e3 * np.mean(t_eval):>13.1f}",
            flush=True,
        )
    print("-" * len(header))
    print(
        f"{'all':<10}{np.mean(all_acc):>9.4f}{np.min(all_acc):>8.3f}{'':>17}"
        f"{1e3 * np.mean(rec_ms):>12.1f}{1e3 * np.mean(eval_ms):>13.1f}"
    )


if __name__ == "__main__":
    main()
