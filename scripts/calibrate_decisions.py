"""Calibrate the sweep's decisions on simulated sweeps: how often a null sweep (every
combination drawn from the same distribution) yields a false "beats the runner-up" or a false
`overfitting`/`undertrained`, and how often a planted overfitting peak is found, at the sweep
shapes users run (prompts x seeds) and under several noise models.

    python scripts/calibrate_decisions.py                       # 4x2, 3x2, 3x4; every noise model
    python scripts/calibrate_decisions.py --shapes 4x2 --models gaussian,heavy --reps 100
    python scripts/calibrate_decisions.py --shapes 8x4 --scenarios null,peak,lead --n-boot 1000

The simulated score is mean curve + prompt effect + seed-within-prompt effect (both shared by
every combination, as a prompt's difficulty and a seed's starting noise are) + a prompt x
combination interaction (a prompt's own response to epoch and guidance) + image noise. The
noise models vary what the intervals must not depend on: the image noise's tails, how much
noisier one prompt is than another, whether a seed's images drift together across adjacent
epochs (as the same seed on neighbouring checkpoints does), and how seed variance compares with
prompt variance. Every row is seeded from --seed, the shape, the model and the scenario, so a
row reproduces on its own. tests/analysis/test_calibration.py runs a lighter version.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from bespoke_exp.analysis.recommendation import recommend_from_images
from bespoke_exp.config.schema import AnalysisConfig

GUIDANCE = (5.0, 7.5, 10.0)
EPOCHS = tuple(range(1, 11))
SHAPES = "4x2,3x2,3x4"  # the demo's and a typical first sweep's shapes, and the one before 2 seeds
# Noise models (overrides of `simulate`'s defaults). A null sweep under any of them has every
# combination equal in truth; only how the noise is drawn differs. All but "interaction" leave
# out the prompt x combination interaction: with fewer than `min_prompts` prompts the intervals
# speak for the prompts swept, for which a prompt's own response is a real difference.
NO_INTERACTION = {"interaction_sd": 0.0}
NOISE_MODELS: dict[str, dict[str, float]] = {
    "gaussian": {},
    "heavy": {"noise_df": 3.0},  # Student-t image noise: outliers a normal model never draws
    "uneven": {"prompt_noise_sd": 0.7},  # some prompts' images several times noisier than others'
    "drift": {"epoch_corr": 0.8},  # a seed's image noise drifts smoothly over adjacent epochs
    "seedy": {"prompt_sd": 0.02, "seed_sd": 0.10, "noise": 0.05},  # seeds matter more than prompts
    "interaction": {"interaction_sd": 0.01},  # each prompt its own small response per combination
}


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
    noise_df: float | None = None,
    prompt_noise_sd: float = 0.0,
    epoch_corr: float = 0.0,
) -> pd.DataFrame:
    """One simulated sweep as an images table (one row per image). `curve(epoch, guidance)`
    is the population mean of each combination (default: 0.65 everywhere, the null).

    Image noise has SD `noise`: Student-t with `noise_df` degrees of freedom when given (else
    normal), scaled per prompt by exp(N(0, prompt_noise_sd)), and AR(1) over epochs with
    correlation `epoch_corr` within each prompt, seed and guidance."""
    e, g = np.meshgrid(np.asarray(epochs), np.asarray(GUIDANCE), indexing="ij")
    e, g = e.ravel(), g.ravel()
    mean = np.full(e.shape, 0.65) if curve is None else curve(e, g)
    n_comb, shape = len(e), (prompts, seeds, len(epochs), len(GUIDANCE))
    shared = (
        rng.normal(0, prompt_sd, (prompts, 1, 1))
        + rng.normal(0, seed_sd, (prompts, seeds, 1))
        + rng.normal(0, interaction_sd, (prompts, 1, n_comb))
    )
    if noise_df is None:  # drawn after the shared effects: the default model's stream is unchanged
        z = rng.normal(0.0, 1.0, shape)
    else:  # unit variance, so `noise` stays the SD whatever the tails
        z = rng.standard_t(noise_df, shape) * np.sqrt((noise_df - 2.0) / noise_df)
    for i in range(1, len(epochs)):  # stationary AR(1): every epoch keeps unit variance
        z[:, :, i] = epoch_corr * z[:, :, i - 1] + np.sqrt(1.0 - epoch_corr**2) * z[:, :, i]
    scale = noise * (np.exp(rng.normal(0.0, prompt_noise_sd, (prompts, 1, 1))) if prompt_noise_sd else 1.0)
    score = mean[None, None, :] + shared + scale * z.reshape(prompts, seeds, n_comb)
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


def rates(reps: int, n_boot: int, seed: int | list[int] = 0, curve=None, **design) -> dict[str, float]:
    """Share of `reps` simulated sweeps whose recommendation says "beats the runner-up", and whose
    diagnosis finds overfitting / undertrained / either (trend); median seeds per prompt the
    recommendation asks for when it cannot separate the top two."""
    rng = np.random.default_rng(seed)
    beats = overfit = under = trend = 0
    asked = []
    for r in range(reps):
        rec = recommend_from_images(
            simulate(rng, curve, **design), final_epoch=10, settings=AnalysisConfig(n_boot=n_boot, seed=r)
        )
        beats += bool(rec.beats_runner_up and rec.beats_runner_up.significant)
        codes = {f.code for f in rec.diagnosis.findings}
        overfit += "overfitting" in codes
        under += "undertrained" in codes
        trend += bool(codes & {"overfitting", "undertrained"})
        if rec.separation and not rec.separation["separated"]:
            asked.append(rec.separation["seeds_needed"] or np.inf)
    return {
        "beats": beats / reps,
        "overfitting": overfit / reps,
        "undertrained": under / reps,
        "trend": trend / reps,
        "seeds_asked": float(np.median(asked)) if asked else float("nan"),
    }


def shape_of(text: str) -> tuple[int, int]:
    """'4x2' -> (4 prompts, 2 seeds)."""
    prompts, _, seeds = text.lower().partition("x")
    return int(prompts), int(seeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=SHAPES, help="comma list of PROMPTSxSEEDS")
    ap.add_argument("--models", default=",".join(NOISE_MODELS), help="comma list of noise models")
    ap.add_argument("--scenarios", default="null,peak", help="comma list of null, peak, lead")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--drop", type=float, default=0.08, help="planted overfitting drop (epoch 6 -> 10)")
    ap.add_argument("--lead", type=float, default=0.06, help="planted lead of one combination")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    models, scenarios = a.models.split(","), a.scenarios.split(",")
    curves = {"null": None, "peak": peak(a.drop), "lead": best_cell(a.lead)}
    columns = {
        "null": ("false trend", "false beats"),
        "peak": (f"peak {a.drop:g} found",),
        "lead": (f"lead {a.lead:g} beats",),
    }
    head = [c for s in scenarios for c in columns[s]]
    print(f"{a.reps} reps per cell, n_boot {a.n_boot}, seed {a.seed}")
    print(f"{'shape':6s} {'noise model':12s} " + " ".join(f"{h:>15s}" for h in head))
    for shape in a.shapes.split(","):
        prompts, seeds = shape_of(shape)
        for model in models:
            t0, cells = time.time(), []
            for scenario in scenarios:
                # Seeded by what the row is, not by its position: any row reproduces alone.
                key = [a.seed, prompts, seeds, list(NOISE_MODELS).index(model), list(curves).index(scenario)]
                design = {"prompts": prompts, "seeds": seeds, **NO_INTERACTION, **NOISE_MODELS[model]}
                r = rates(a.reps, a.n_boot, key, curves[scenario], **design)
                if scenario == "null":
                    cells += [r["trend"], r["beats"]]
                else:
                    cells.append(r["overfitting"] if scenario == "peak" else r["beats"])
            print(
                f"{shape:6s} {model:12s} "
                + " ".join(f"{c:15.3f}" for c in cells)
                + f"   ({time.time() - t0:.0f} s)"
            )


if __name__ == "__main__":
    main()
