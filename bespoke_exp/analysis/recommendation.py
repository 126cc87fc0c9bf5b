"""The recommendation: the production pick, how sure we are, and what to do about training.

>>> rec = recommend_from_images(images, final_epoch=10)    # or recommend(sweep)
>>> print(rec.to_markdown()); json.dumps(rec.to_dict())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from bespoke_exp.analysis.diagnosis import Diagnosis, RetrainSuggestion, Thresholds, diagnose_table
from bespoke_exp.analysis.load import Sweep
from bespoke_exp.analysis.statistics import (
    Comparison,
    compare_table,
    marginal_table,
    plain,
    prepare,
    rank_table,
)
from bespoke_exp.config import CONF_DIR

_COMBINATION_KEYS = ("epoch", "guidance", "run_id", "mean", "ci_low", "ci_high", "checkpoint")


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
        return plain(d)

    def to_markdown(self, top: int = 10) -> str:
        b, ci = self.best, f"{self.confidence:.0%} CI"
        pick = (
            f"epoch {b['epoch']} at guidance {b['guidance']:g} "
            f"({self.metric} {b['mean']:.2f}, {ci} {b['ci_low']:.2f}–{b['ci_high']:.2f})"
        )
        head = (
            f"Best combination is {pick}, but none is good enough (see diagnosis)."
            if self.diagnosis.code == "poor_overall"
            else f"Use {pick}."
        )
        c, r = self.beats_runner_up, self.runner_up
        if c is not None and r is not None:
            verdict = "beats" if c.significant else "does not beat"
            head += (
                f" It {verdict} the runner-up (epoch {r['epoch']}, guidance {r['guidance']:g}) beyond "
                f"noise: difference {c.diff:+.3f}, {ci} {c.ci_low:.3f} to {c.ci_high:.3f} over "
                f"{c.n_items} paired items."
            )
        lines = [f"# Checkpoint recommendation ({self.metric})", "", head]
        if b.get("checkpoint"):
            lines.append(f"Checkpoint: `{b['checkpoint']}` (run `{b['run_id']}`)")
        lines += [
            "",
            "## Ranking",
            "",
            f"| rank | epoch | guidance | {self.metric} | {ci} | items | run |",
            "|---:|---:|---:|---:|---|---:|---|",
        ]
        lines += [
            f"| {x['rank']} | {x['epoch']} | {x['guidance']:g} | {x['mean']:.3f} | "
            f"{x['ci_low']:.3f}–{x['ci_high']:.3f} | {x['n_items']} | {x['run_id']} |"
            for x in self.ranking[:top]
        ]
        if len(self.ranking) > top:
            lines.append(f"\n({len(self.ranking) - top} more combinations in `to_dict()['ranking']`.)")
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


def recommend_from_images(
    images: pd.DataFrame,
    *,
    final_epoch: int | None = None,
    metric: str = "score",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    thresholds: Thresholds = Thresholds(),
    higher_is_better: bool | None = None,
) -> Recommendation:
    """Rank the (epoch, guidance) combinations, test the best against the runner-up, and
    diagnose the epoch trend."""
    t = prepare(images, metric, higher_is_better)
    boot = (n_boot, confidence, seed)
    ranking = rank_table(t, *boot)
    if "checkpoint" not in ranking.columns:
        ranking["checkpoint"] = None
    records = plain(ranking[[*_COMBINATION_KEYS, "n_items", "rank"]].to_dict("records"))
    best = {k: records[0][k] for k in _COMBINATION_KEYS}
    runner_up = beats = None
    if len(records) > 1:
        runner_up = {k: records[1][k] for k in _COMBINATION_KEYS}
        beats = compare_table(
            t, (best["epoch"], best["guidance"]), (runner_up["epoch"], runner_up["guidance"]), boot
        )
    return Recommendation(
        metric,
        confidence,
        best,
        runner_up,
        beats,
        records,
        plain(marginal_table(t, "epoch", *boot).to_dict("records")),
        plain(marginal_table(t, "guidance", *boot).to_dict("records")),
        diagnose_table(t, ranking, final_epoch, thresholds, boot),
    )


def default_options() -> dict:
    """`recommend_from_images` options from conf/analysis/default.yaml (what a sweep uses)."""
    return options_from(OmegaConf.load(CONF_DIR / "analysis" / "default.yaml"))


def options_from(analysis_cfg) -> dict:
    data = OmegaConf.to_container(analysis_cfg, resolve=True)
    return {**data, "thresholds": Thresholds(**data.get("thresholds", {}))}


def recommend(sweep: Sweep, **options) -> Recommendation:
    """Rank the sweep's (epoch, guidance) combinations with bootstrap CIs and diagnose.
    Options go to `recommend_from_images`, over the defaults in conf/analysis/default.yaml."""
    return recommend_from_images(
        sweep.images, final_epoch=sweep.final_epoch, **{**default_options(), **options}
    )
