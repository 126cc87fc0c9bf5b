"""Calibrate the sweep's decisions on simulated sweeps: how often a null sweep (every
combination drawn from the same distribution) yields a false "beats the runner-up" or a false
`overfitting`/`undertrained`, and how often a planted peak is found.

    python scripts/calibrate_decisions.py                      # defaults: 3 prompts x 4 seeds, 300 reps
    python scripts/calibrate_decisions.py --prompts 8 --seeds 4 --reps 500 --n-boot 1000

The simulated score is mean curve + prompt effect + seed-within-prompt effect (both shared by
every combination, as a prompt's difficulty and a seed's starting noise are) + a prompt x
combination interaction (a prompt's own response to epoch and guidance: what makes seeds of
one prompt related) + image noise. tests/test_calibration.py runs a lighter version.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from bespoke_exp.analysis.recommendation import recommend_from_images

GUIDANCE = (5.0, 7.5, 10.0)
EPOCHS = tuple(range(1, 11))


def simulate(
    rng: np.random.Generator,
    curve: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    *,
    prompts: int = 3,
    seeds: int = 4,
    epochs: tuple[int, ...] = EPOCHS,
    prompt_sd: float = 0.08,
    seed_sd: float = 0.04,
    interaction_sd: float = 0.01,
    noise: float = 0.03,
) -> pd.DataFrame:
    """One simulated sweep as an images table (one row per image). `curve(epoch, guidance)`
    is the population mean of each combination (default: 0.65 everywhere, the null)."""
    e, g = np.meshgrid(np.asarray(epochs), np.asarray(GUIDANCE), indexing="ij")
    e, g = e.ravel(), g.ravel()
    mean = np.full(e.shape, 0.65) if curve is None else curve(e, g)
    n_comb = len(e)
    score = (
        mean[None, None, :]
        + rng.normal(0, prompt_sd, (prompts, 1, 1))
        + rng.normal(0, seed_sd, (prompts, seeds, 1))
        + rng.normal(0, interaction_sd, (prompts, 1, n_comb))
        + rng.normal(0, noise, (prompts, seeds, n_comb))
    )
    p, s, c = np.meshgrid(np.arange(prompts), np.arange(seeds), np.arange(n_comb), indexing="ij")
    c = c.ravel()
    return pd.DataFrame(
        {
            "run_id": [f"run-e{a}-g{b:g}" for a, b in zip(e[c], g[c])],
            "epoch": e[c],
            "guidance": g[c],
            "prompt_id": [f"p{i}" for i in p.ravel()],
            "seed": s.ravel(),
            "score": score.ravel(),
        }
    )


def peak(drop: float, at: int = 6) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A planted peak at epoch `at`, falling linearly by `drop` to epoch 10 (flat before)."""
    return lambda e, g: 0.65 + np.where(e <= at, 0.0, -drop * (e - at) / (10 - at))


def best_cell(
    lead: float, at: tuple[int, float] = (6, 7.5)
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """One combination `lead` above all the others (which tie)."""
    return lambda e, g: 0.65 + lead * ((e == at[0]) & (g == at[1]))


def rates(reps: int, n_boot: int, seed: int = 0, curve=None, **design) -> dict[str, float]:
    """Share of `reps` simulated sweeps whose recommendation says "beats the runner-up", and whose
    diagnosis finds overfitting / undertrained; median seeds per prompt the recommendation asks
    for when it cannot separate the top two."""
    rng = np.random.default_rng(seed)
    beats = overfit = under = 0
    asked = []
    for r in range(reps):
        rec = recommend_from_images(simulate(rng, curve, **design), final_epoch=10, n_boot=n_boot, seed=r)
        beats += bool(rec.beats_runner_up and rec.beats_runner_up.significant)
        codes = {f.code for f in rec.diagnosis.findings}
        overfit += "overfitting" in codes
        under += "undertrained" in codes
        if rec.separation and not rec.separation["separated"]:
            asked.append(rec.separation["seeds_needed"] or np.inf)
    return {
        "beats": beats / reps,
        "overfitting": overfit / reps,
        "undertrained": under / reps,
        "seeds_asked": float(np.median(asked)) if asked else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--interaction-sd", type=float, default=0.0, help="prompt x combination SD")
    ap.add_argument("--noise", type=float, default=0.03, help="image noise SD")
    ap.add_argument("--drop", type=float, default=0.04, help="planted overfitting drop (epoch 6 -> 10)")
    ap.add_argument("--lead", type=float, default=0.06, help="planted lead of one combination")
    ap.add_argument("--scenarios", default="null,peak,lead", help="comma list of null, peak, lead")
    a = ap.parse_args()
    design = {"prompts": a.prompts, "seeds": a.seeds, "interaction_sd": a.interaction_sd, "noise": a.noise}
    scenarios = {"null": ("null", None), "peak": (f"peak drop={a.drop:g}", peak(a.drop))}
    scenarios["lead"] = (f"lead={a.lead:g}", best_cell(a.lead))
    for key in a.scenarios.split(","):
        name, curve = scenarios[key]
        t0 = time.time()
        r = rates(a.reps, a.n_boot, curve=curve, **design)
        print(
            f"{name:14s} {a.prompts} prompts x {a.seeds} seeds, interaction {a.interaction_sd:g}: "
            f"beats runner-up {r['beats']:.3f}  overfitting {r['overfitting']:.3f}  "
            f"undertrained {r['undertrained']:.3f}  median seeds asked {r['seeds_asked']:g}  "
            f"({a.reps} reps, {time.time() - t0:.0f} s)"
        )


if __name__ == "__main__":
    main()
