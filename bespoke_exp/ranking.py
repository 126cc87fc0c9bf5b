"""Rank sweep cells (epoch x guidance) from the per-image table and diagnose the epoch trend.

    >>> rec = recommend(images, final_epoch=10)
    >>> print(rec.to_markdown()); json.dumps(rec.to_dict())

`images` has one row per generated image: run_id, epoch, guidance, prompt_id, seed and the
metric (default `score`); optionally split ("train"/"heldout"), checkpoint and
`memorisation/near_copy`. An item is a (prompt_id, seed) pair. Every cell renders the same
items, so uncertainty is a percentile bootstrap over items, and comparisons resample the
same items on both sides (paired), which cancels per-prompt difficulty. A cell missing
items is compared on the items both sides share. Metric direction comes from the registry
in `bespoke_exp.metrics` (or `higher_is_better=`). Pure pandas/numpy.

Diagnosis rules, on the epoch marginal (mean over guidance) and the cell ranking. "A beats B"
means the paired bootstrap CI of A-B excludes 0 in the good direction and the difference is
at least `Thresholds.min_effect`.
  poor_overall        best cell worse than `poor` -> retrain check_data (captions, resolution, LR)
  overfitting         peak epoch < last swept epoch and peak beats last -> retrain fewer_epochs=peak
  undertrained        last swept epoch is the peak and the trainer's final (or final unknown), and it
                      beats the epoch `lookback` earlier -> retrain more_epochs (or raise the LR)
  still_improving     as undertrained, but the trainer produced later epochs -> sweep them first
  sweet_spot          peak before the last epoch, decline within noise -> no retrain
  final_best          last epoch is the peak and has plateaued -> no retrain
  single_epoch        one epoch swept: no trend to read
  generalisation_gap  per-epoch mean(train) - mean(heldout) has LSQ slope > gap_slope and last gap > gap_late
  memorisation        near-copy rate > near_copy_rate at some epoch (named), slope reported
  guidance_sensitive  guidance-marginal spread > guidance_spread (best guidance named), else _insensitive
Primary code: poor_overall, else the epoch-trend rule. Findings list every rule that fired,
primary first. Retrain comes from the primary finding, else the first finding that has one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from bespoke_exp.metrics import metric_spec

REQUIRED = ("run_id", "epoch", "guidance", "prompt_id", "seed")
NEAR_COPY = "memorisation/near_copy"
Cell = tuple[int, float]


@dataclass(frozen=True)
class Thresholds:
    """Every numeric cut-off the diagnosis uses, in units of the ranked metric (0..1 score)."""

    poor: float = 0.5  # best cell below this: the LoRA is not working at any epoch or guidance
    min_effect: float = 0.01  # smallest paired difference worth acting on, even when significant
    lookback: int = 2  # "still improving" compares the last epoch with the one this many earlier
    gap_slope: float = 0.005  # train-minus-heldout gap growing faster than this per epoch ...
    gap_late: float = 0.05  # ... and at least this large at the last epoch
    near_copy_rate: float = 0.2  # share of an epoch's images that near-copy a training image
    guidance_spread: float = 0.05  # best-minus-worst guidance marginal above this: guidance matters


@dataclass
class Comparison:
    """Paired difference mean(a) - mean(b) over shared items; significant = a beats b beyond noise."""

    a: tuple
    b: tuple
    diff: float
    ci_low: float
    ci_high: float
    n_items: int
    significant: bool


@dataclass
class RetrainSuggestion:
    action: str  # check_data | fewer_epochs | more_epochs | vary_captions | lower_learning_rate
    reason: str
    epochs: int | None = None


@dataclass
class Finding:
    code: str
    sentence: str
    evidence: dict[str, Any]
    retrain: RetrainSuggestion | None = None


@dataclass
class Diagnosis:
    code: str
    sentence: str
    findings: list[Finding]
    retrain: RetrainSuggestion | None


@dataclass
class _Table:
    wide: pd.DataFrame  # index (prompt_id, seed), columns (epoch, guidance): item mean of the metric
    cells: pd.DataFrame  # index (epoch, guidance): run_id [, checkpoint]
    split: pd.Series  # prompt_id -> "train" | "heldout" | ""
    near_copy: pd.Series  # epoch -> near-copy rate (empty when not measured)
    metric: str
    sign: float  # +1 when higher is better, so sign * value is always "goodness"


# --------------------------------------------------------------------------- preparation
def _prepare(images: pd.DataFrame, metric: str, higher_is_better: bool | None) -> _Table:
    if not isinstance(images, pd.DataFrame) or images.empty:
        raise ValueError("images table is empty: need one row per generated image")
    missing = [c for c in (*REQUIRED, metric) if c not in images.columns]
    if missing:
        raise ValueError(f"images table lacks required column(s) {missing}; has {list(images.columns)}")
    if higher_is_better is None:
        try:
            higher_is_better = metric_spec(metric).higher_is_better
        except KeyError as err:
            raise ValueError(f"metric {metric!r} not in the metrics registry; pass higher_is_better") from err
    df = images.astype({"epoch": int, "guidance": float, metric: float})
    rows = df.dropna(subset=[metric])  # an image whose metric could not be computed carries no evidence
    if rows.empty:
        raise ValueError(f"metric column {metric!r} is NaN in every row")
    wide = rows.pivot_table(index=["prompt_id", "seed"], columns=["epoch", "guidance"], values=metric)
    extra = ["checkpoint"] if "checkpoint" in rows.columns else []
    cells = rows.groupby(["epoch", "guidance"])[["run_id", *extra]].first()
    split = (
        rows.groupby("prompt_id")["split"].first().fillna("").astype(str).str.strip().str.lower()
        if "split" in rows.columns
        else pd.Series(dtype=str)
    )
    near = df.groupby("epoch")[NEAR_COPY].mean().dropna() if NEAR_COPY in df else pd.Series(dtype=float)
    return _Table(wide, cells, split, near, metric, 1.0 if higher_is_better else -1.0)


def _boot_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) bootstrap means of each column of x (items x k, NaN = missing item).

    Items are resampled jointly for all columns (one count vector per replicate), so
    columns are paired; a missing item simply contributes nothing to its column.
    """
    n = x.shape[0]
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    present = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(present, x, 0.0)) / (counts @ present)


def _summarise(x: np.ndarray, n_boot: int, confidence: float, seed: int) -> tuple[np.ndarray, ...]:
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    boot = _boot_means(x, n_boot, seed)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.nanquantile(boot, [tail, 1.0 - tail], axis=0)
    return np.nanmean(x, axis=0), lo, hi, (~np.isnan(x)).sum(axis=0)


def _paired(xa: np.ndarray, xb: np.ndarray, what: str, n_boot: int, confidence: float, seed: int) -> tuple:
    shared = ~np.isnan(xa) & ~np.isnan(xb)
    if not shared.any():
        raise ValueError(f"{what} share no (prompt_id, seed) items to compare")
    mean, lo, hi, n = _summarise((xa - xb)[shared][:, None], n_boot, confidence, seed)
    return float(mean[0]), float(lo[0]), float(hi[0]), int(n[0])


def _beats(sign: float, diff: float, lo: float, hi: float, min_effect: float = 0.0) -> bool:
    return bool((lo > 0 if sign > 0 else hi < 0) and sign * diff >= min_effect)


def _marginal_items(t: _Table, by: str) -> pd.DataFrame:
    """Items x levels of `by`: each item's mean over the other factor (paired across levels)."""
    if by not in ("epoch", "guidance"):
        raise ValueError(f"marginal: by must be 'epoch' or 'guidance', got {by!r}")
    return t.wide.T.groupby(level=by).mean().T


# --------------------------------------------------------------------------- ranking
def _rank(t: _Table, n_boot: int, confidence: float, seed: int) -> pd.DataFrame:
    mean, lo, hi, n = _summarise(t.wide.to_numpy(float), n_boot, confidence, seed)
    out = pd.DataFrame(list(t.wide.columns), columns=["epoch", "guidance"])
    out = out.join(t.cells, on=["epoch", "guidance"])
    out = out.assign(score=mean, ci_low=lo, ci_high=hi, n_items=n, _key=t.sign * mean)
    # Ties go to the earlier epoch, then lower guidance: less training, less overfitting risk.
    out = out.sort_values(["_key", "epoch", "guidance"], ascending=[False, True, True])
    out = out.drop(columns="_key")
    out["rank"] = np.arange(1, len(out) + 1)
    return out.reset_index(drop=True)


def rank_cells(
    images: pd.DataFrame, metric: str = "score", n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """One row per (epoch, guidance), best first: epoch, guidance, run_id, [checkpoint], score
    (mean of `metric` over items), ci_low, ci_high (bootstrap over items), n_items, rank."""
    return _rank(_prepare(images, metric, higher_is_better), n_boot, confidence, seed)


def compare_cells(
    images: pd.DataFrame, a: Cell, b: Cell, metric: str = "score", n_boot: int = 2000,
    confidence: float = 0.95, seed: int = 0, higher_is_better: bool | None = None,
) -> Comparison:
    """Paired bootstrap of mean(a) - mean(b) over the items both (epoch, guidance) cells share."""
    return _compare(_prepare(images, metric, higher_is_better), a, b, (n_boot, confidence, seed))


def _compare(t: _Table, a: Cell, b: Cell, boot: tuple) -> Comparison:
    a, b = (int(a[0]), float(a[1])), (int(b[0]), float(b[1]))
    for cell in (a, b):
        if cell not in t.wide.columns:
            have = list(t.wide.columns)
            raise ValueError(f"cell (epoch, guidance) {cell} not in the images table; it has {have}")
    xa, xb = t.wide[a].to_numpy(float), t.wide[b].to_numpy(float)
    diff, lo, hi, n = _paired(xa, xb, f"cells {a} and {b}", *boot)
    return Comparison(a, b, diff, lo, hi, n, _beats(t.sign, diff, lo, hi))


def _marginal(t: _Table, by: str, n_boot: int, confidence: float, seed: int) -> pd.DataFrame:
    m = _marginal_items(t, by)
    mean, lo, hi, n = _summarise(m.to_numpy(float), n_boot, confidence, seed)
    return pd.DataFrame({by: list(m.columns), "score": mean, "ci_low": lo, "ci_high": hi, "n_items": n})


def marginal(
    images: pd.DataFrame, by: str = "epoch", metric: str = "score", n_boot: int = 2000,
    confidence: float = 0.95, seed: int = 0, higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """Mean of `metric` per epoch (averaged over guidance) or per guidance (over epochs), with a
    bootstrap CI over items. Columns [by, score, ci_low, ci_high, n_items], sorted by `by`."""
    return _marginal(_prepare(images, metric, higher_is_better), by, n_boot, confidence, seed)


# --------------------------------------------------------------------------- diagnosis
def _trend(t: _Table, em: pd.DataFrame, final_epoch: int | None, th: Thresholds, boot: tuple) -> Finding:
    m, means, epochs = t.metric, em.mean(), [int(e) for e in em.columns]
    last, peak = epochs[-1], int((t.sign * means).idxmax())  # idxmax: earliest epoch on ties
    if len(epochs) == 1:
        return Finding("single_epoch", f"Only epoch {last} was swept, so there is no epoch trend to read.",
                       {"metric": m, "epochs": epochs})
    if peak < last:
        d, lo, hi, n = _paired(em[peak].to_numpy(), em[last].to_numpy(), "epochs", *boot)
        ev = {"metric": m, "peak_epoch": peak, "peak_score": means[peak], "last_epoch": last,
              "last_score": means[last], "drop": d, "ci_low": lo, "ci_high": hi, "n_items": n}
        where = (f"Mean {m} peaks at epoch {peak} ({means[peak]:.2f}) and epoch {last} scores "
                 f"{means[last]:.2f} (drop {abs(d):.3f}, {boot[1]:.0%} CI {lo:.3f} to {hi:.3f})")
        if _beats(t.sign, d, lo, hi, th.min_effect):
            reason = f"epochs after {peak} lose {abs(d):.2f} {m} ({means[last]:.2f} at epoch {last})"
            return Finding("overfitting", f"{where}: later epochs overfit.", ev,
                           RetrainSuggestion("fewer_epochs", reason, peak))
        return Finding("sweet_spot", f"{where}, a decline within noise: no retrain needed.", ev)
    ref = max((e for e in epochs if e <= last - th.lookback), default=epochs[0])
    d, lo, hi, n = _paired(em[last].to_numpy(), em[ref].to_numpy(), "epochs", *boot)
    ev = {"metric": m, "last_epoch": last, "last_score": means[last], "ref_epoch": ref,
          "ref_score": means[ref], "gain": d, "ci_low": lo, "ci_high": hi, "n_items": n,
          "final_epoch": final_epoch}
    gain = (f"{means[last]:.2f} vs {means[ref]:.2f} at epoch {ref}, gain {d:+.3f}, "
            f"{boot[1]:.0%} CI {lo:.3f} to {hi:.3f}")
    if not _beats(t.sign, d, lo, hi, th.min_effect):
        return Finding("final_best", f"The last epoch {last} scores best and has plateaued ({gain}): "
                       "no retrain needed.", ev)
    if final_epoch is None or last == final_epoch:
        more = last + max(th.lookback, last // 2)  # a starting point: half as many epochs again
        reason = f"{m} still rising at epoch {last} (+{abs(d):.2f} over epoch {ref}); train longer / raise LR"
        return Finding("undertrained", f"Mean {m} is still rising at the final epoch {last} ({gain}): "
                       "the LoRA is undertrained.", ev, RetrainSuggestion("more_epochs", reason, more))
    return Finding("still_improving", f"Mean {m} is still rising at epoch {last} ({gain}) but the trainer "
                   f"produced epochs up to {final_epoch}: sweep epochs {last + 1}-{final_epoch} before "
                   "retraining.", ev)


def _gap(t: _Table, em: pd.DataFrame, th: Thresholds) -> Finding | None:
    if t.split.empty:
        return None
    split = em.index.get_level_values("prompt_id").map(t.split)
    gaps = (t.sign * (em[split == "train"].mean() - em[split == "heldout"].mean())).dropna()
    if len(gaps) < 2:  # needs both splits at two or more epochs
        return None
    epochs = [int(e) for e in gaps.index]
    slope, late = float(np.polyfit(epochs, gaps.to_numpy(), 1)[0]), float(gaps.iloc[-1])
    if not (slope > th.gap_slope and late > th.gap_late):
        return None
    ev = {"metric": t.metric, "epochs": epochs, "gap": list(gaps), "slope": slope, "late_gap": late,
          "n_train_prompts": int((t.split == "train").sum()),
          "n_heldout_prompts": int((t.split == "heldout").sum())}
    onset = next(e for e, g in zip(epochs, gaps) if g > th.gap_late)
    before = [e for e in epochs if e < onset]
    reason = f"held-out prompts trail training prompts by more than {th.gap_late:.2f} from epoch {onset}"
    retrain = (RetrainSuggestion("fewer_epochs", reason, before[-1]) if before
               else RetrainSuggestion("vary_captions", reason + "; vary the training captions' phrasing"))
    sentence = (f"Held-out prompts fall behind training prompts as training goes on: the gap grows "
                f"{slope:+.3f} per epoch to {late:.2f} at epoch {epochs[-1]}.")
    return Finding("generalisation_gap", sentence, ev, retrain)


def _memorisation(t: _Table, th: Thresholds, best_epoch: int) -> Finding | None:
    rate = t.near_copy
    flagged = [int(e) for e, r in rate.items() if r > th.near_copy_rate]
    if not flagged:
        return None
    epochs = [int(e) for e in rate.index]
    slope = float(np.polyfit(epochs, rate.to_numpy(), 1)[0]) if len(epochs) > 1 else 0.0
    ev = {"key": NEAR_COPY, "epochs": epochs, "rate": list(rate), "flagged_epochs": flagged, "slope": slope,
          "best_epoch_flagged": best_epoch in flagged}
    worst = int(rate.idxmax())
    sentence = (f"Near-copies of training images exceed {th.near_copy_rate:.0%} at epoch(s) "
                f"{', '.join(map(str, flagged))} (up to {rate[worst]:.0%} at epoch {worst})"
                + (", rising with epoch." if slope > 0 else "."))
    before = [e for e in epochs if e < flagged[0]]
    reason = f"{NEAR_COPY} above {th.near_copy_rate:.0%} from epoch {flagged[0]}"
    retrain = (RetrainSuggestion("fewer_epochs", reason, before[-1]) if before
               else RetrainSuggestion("lower_learning_rate", reason + ", the first swept epoch"))
    return Finding("memorisation", sentence, ev, retrain)


def _guidance(t: _Table, th: Thresholds) -> Finding | None:
    means = _marginal_items(t, "guidance").mean()
    if len(means) < 2:
        return None
    best, spread = float((t.sign * means).idxmax()), float(means.max() - means.min())
    ev = {"metric": t.metric, "guidance": [float(g) for g in means.index], "score": list(means),
          "spread": spread, "best_guidance": best}
    if spread > th.guidance_spread:
        return Finding("guidance_sensitive", f"Guidance matters: {best:g} scores best ({means[best]:.2f}) "
                       f"and the guidance means span {spread:.2f} (> {th.guidance_spread:.2f}).", ev)
    return Finding("guidance_insensitive", f"Guidance barely matters: the guidance means span {spread:.2f} "
                   f"(<= {th.guidance_spread:.2f}); {best:g} is marginally best.", ev)


def _diagnose(t: _Table, ranking: pd.DataFrame, final_epoch: int | None, th: Thresholds, boot: tuple,
              ) -> Diagnosis:
    last = int(t.wide.columns.get_level_values("epoch").max())
    if final_epoch is not None and final_epoch < last:
        raise ValueError(f"final_epoch={final_epoch} but the sweep includes epoch {last}")
    em = _marginal_items(t, "epoch")
    best = ranking.iloc[0]
    findings: list[Finding | None] = []
    if t.sign * best["score"] < t.sign * th.poor:
        ev = {"metric": t.metric, "best_score": best["score"], "ci_low": best["ci_low"],
              "ci_high": best["ci_high"], "threshold": th.poor}
        sentence = (f"Even the best cell (epoch {best['epoch']}, guidance {best['guidance']:g}) scores only "
                    f"{best['score']:.2f} ({boot[1]:.0%} CI {best['ci_low']:.2f} to {best['ci_high']:.2f}), "
                    f"worse than {th.poor:.2f}.")
        reason = (f"no cell reaches {t.metric} {th.poor:.2f}; check the training captions, training "
                  "resolution and learning rate")
        findings.append(Finding("poor_overall", sentence, ev, RetrainSuggestion("check_data", reason)))
    findings += [_trend(t, em, final_epoch, th, boot), _gap(t, em, th),
                 _memorisation(t, th, int(best["epoch"])), _guidance(t, th)]
    found = [f for f in findings if f is not None]
    for f in found:
        f.evidence = _plain(f.evidence)  # plain numbers, NaN -> None, for JSON and for readers
    retrain = next((f.retrain for f in found if f.retrain is not None), None)
    return Diagnosis(found[0].code, found[0].sentence, found, retrain)


def diagnose(
    images: pd.DataFrame, *, final_epoch: int | None = None, metric: str = "score",
    thresholds: Thresholds = Thresholds(), n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
    higher_is_better: bool | None = None,
) -> Diagnosis:
    """Read the epoch trend and secondary signals (rules in the module docstring).

    `final_epoch` is the last epoch the trainer produced; the sweep need not include it.
    """
    t = _prepare(images, metric, higher_is_better)
    boot = (n_boot, confidence, seed)
    return _diagnose(t, _rank(t, *boot), final_epoch, thresholds, boot)


# --------------------------------------------------------------------------- recommendation
def _plain(x: Any) -> Any:
    """JSON-ready copy: numpy scalars -> Python, NaN/NA -> None, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if x is pd.NA or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return x


_CELL_KEYS = ("epoch", "guidance", "run_id", "score", "ci_low", "ci_high", "checkpoint")


@dataclass
class Recommendation:
    """The production pick, how sure we are, and what to do about training."""

    metric: str
    confidence: float
    best: dict[str, Any]
    runner_up: dict[str, Any] | None
    beats_runner_up: Comparison | None
    ranking: list[dict[str, Any]]
    by_epoch: list[dict[str, Any]]
    by_guidance: list[dict[str, Any]]
    diagnosis: Diagnosis

    @property
    def retrain(self) -> RetrainSuggestion | None:
        return self.diagnosis.retrain

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["diagnosis"] = {k: d["diagnosis"][k] for k in ("code", "sentence", "findings")}
        d["retrain"] = asdict(self.retrain) if self.retrain else None
        return _plain(d)

    def to_markdown(self, top: int = 10) -> str:
        b, ci = self.best, f"{self.confidence:.0%} CI"
        cell = (f"epoch {b['epoch']} at guidance {b['guidance']:g} "
                f"({self.metric} {b['score']:.2f}, {ci} {b['ci_low']:.2f}–{b['ci_high']:.2f})")
        head = (f"Best cell is {cell}, but no cell is good enough (see diagnosis)."
                if self.diagnosis.code == "poor_overall" else f"Use {cell}.")
        c, r = self.beats_runner_up, self.runner_up
        if c is not None and r is not None:
            verdict = "beats" if c.significant else "does not beat"
            head += (f" It {verdict} the runner-up (epoch {r['epoch']}, guidance {r['guidance']:g}) beyond "
                     f"noise: difference {c.diff:+.3f}, {ci} {c.ci_low:.3f} to {c.ci_high:.3f} over "
                     f"{c.n_items} paired items.")
        lines = [f"# Checkpoint recommendation ({self.metric})", "", head]
        if b.get("checkpoint"):
            lines.append(f"Checkpoint: `{b['checkpoint']}` (run `{b['run_id']}`)")
        lines += ["", "## Ranking", "", f"| rank | epoch | guidance | {self.metric} | {ci} | items | run |",
                  "|---:|---:|---:|---:|---|---:|---|"]
        lines += [f"| {x['rank']} | {x['epoch']} | {x['guidance']:g} | {x['score']:.3f} | "
                  f"{x['ci_low']:.3f}–{x['ci_high']:.3f} | {x['n_items']} | {x['run_id']} |"
                  for x in self.ranking[:top]]
        if len(self.ranking) > top:
            lines.append(f"\n({len(self.ranking) - top} more cells in `to_dict()['ranking']`.)")
        lines += ["", f"## Diagnosis: {self.diagnosis.code}", "", self.diagnosis.sentence, ""]
        for f in self.diagnosis.findings:
            ev = ", ".join(f"{k}={_fmt(v)}" for k, v in f.evidence.items())
            lines += [f"- **{f.code}**: {f.sentence}", f"  - evidence: {ev}"]
        rt = self.retrain
        epochs = f" (epochs={rt.epochs})" if rt and rt.epochs is not None else ""
        lines += ["", "## Retrain", "", f"{rt.action}{epochs}: {rt.reason}." if rt else "No retrain needed."]
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)


def recommend(
    images: pd.DataFrame, *, final_epoch: int | None = None, metric: str = "score", n_boot: int = 2000,
    confidence: float = 0.95, seed: int = 0, thresholds: Thresholds = Thresholds(),
    higher_is_better: bool | None = None,
) -> Recommendation:
    """Rank the cells, test the best against the runner-up, and diagnose the epoch trend."""
    t = _prepare(images, metric, higher_is_better)
    boot = (n_boot, confidence, seed)
    ranking = _rank(t, *boot)
    if "checkpoint" not in ranking.columns:
        ranking["checkpoint"] = None
    records = _plain(ranking[[*_CELL_KEYS, "n_items", "rank"]].to_dict("records"))
    best = {k: records[0][k] for k in _CELL_KEYS}
    runner_up = beats = None
    if len(records) > 1:
        runner_up = {k: records[1][k] for k in _CELL_KEYS}
        cell = (best["epoch"], best["guidance"])
        beats = _compare(t, cell, (runner_up["epoch"], runner_up["guidance"]), boot)
    return Recommendation(
        metric, confidence, best, runner_up, beats, records,
        _plain(_marginal(t, "epoch", *boot).to_dict("records")),
        _plain(_marginal(t, "guidance", *boot).to_dict("records")),
        _diagnose(t, ranking, final_epoch, thresholds, boot),
    )
