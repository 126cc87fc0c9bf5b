"""The trainer's loss per epoch beside the held-out score: does training loss keep falling while
the prompts the LoRA never saw stop improving?

The loss comes from the trainer's TensorBoard logs (`checkpoint.train_logs`, kohya's
`--logging_dir`, read by `training_log`); the score is the ranked metric by epoch (mean over the
other axes) on the prompts the ranking uses: held-out ones when the sweep says which those are.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from bespoke_exp.analysis.training_log import TrainingLogError, read_training_log
from bespoke_exp.config.params import BASE_EPOCH

LOSS_KEY = "epoch_training/loss"  # the dashboard's history, step = epoch


def score_key(label: str) -> str:
    """The score's history beside the loss; MLflow keys allow only [A-Za-z0-9_-./ ]."""
    return "epoch_training/" + re.sub(r"[^A-Za-z0-9_\-.]+", "_", label).strip("_")


def training_curve(
    train_logs: str | None,
    metric: str,
    by_epoch: list[dict[str, Any]],
    training: Mapping[str, object] | None,
    heldout_only: bool,
) -> dict[str, Any] | None:
    """{'loss': {epoch: loss}, 'score': {epoch: mean}, 'score_label', 'source', 'sentence'}, or
    {'sentence': why there is no curve} when the logs can't be read; None when none were given.
    `by_epoch`: the recommendation's marginal rows (epoch, mean); `training`: the checkpoint
    header's settings (its start time picks the run among several in one logging folder)."""
    if not train_logs:
        return None
    try:
        log = read_training_log(train_logs, _started_at((training or {}).get("training_started_at")))
    except TrainingLogError as error:
        return {"sentence": f"Training curve: not drawn, {error}."}
    label = f"held-out {metric}" if heldout_only else f"{metric} (every prompt)"
    score = {int(r["epoch"]): float(r["mean"]) for r in by_epoch if int(r["epoch"]) != BASE_EPOCH}
    loss = {e: v for e, v in log.loss_by_epoch.items() if e in score} or dict(log.loss_by_epoch)
    curve = {"loss": loss, "score": score, "score_label": label, "source": f"{log.tag} in {log.run_dir}"}
    return {**curve, "sentence": _sentence(loss, score, label, log.tag)}


def _sentence(loss: dict[int, float], score: dict[int, float], label: str, tag: str) -> str:
    finite = {e: v for e, v in sorted(loss.items()) if math.isfinite(v)}
    missing = sorted(set(loss) - set(finite))
    bad = f" (no finite loss at epoch {', '.join(map(str, missing))})" if missing else ""
    if len(finite) < 2 or not score:
        return f"Training curve: too few epochs with a finite loss ({tag}){bad}."
    first, last = min(finite), max(finite)
    peak, final = max(score, key=score.get), max(score)
    trend = "falls" if finite[last] < finite[first] else "does not fall"
    text = (
        f"Training curve ({tag}): the training loss {trend} from {finite[first]:.4f} at epoch {first} "
        f"to {finite[last]:.4f} at epoch {last}{bad}, while the {label} peaks at epoch {peak} "
        f"({score[peak]:.3f})"
    )
    if trend == "falls" and peak < final:
        text += (
            f" and is {score[final]:.3f} at epoch {final}: the LoRA keeps fitting its training "
            "captions after the prompts it never saw stop improving"
        )
    return text + "."


def training_curve_figure(curve: dict[str, Any], title: str) -> Figure:
    """Training loss (left axis) and the score (right axis) by epoch, on one set of epochs."""
    loss_by, score_by = (_by_epoch(curve[k]) for k in ("loss", "score"))
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    epochs = sorted(set(loss_by) | set(score_by))
    loss = [loss_by.get(e, math.nan) for e in epochs]
    ax.plot(epochs, loss, color="#444444", marker="o", linewidth=2, label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (trainer's log)")
    ax.set_xticks(epochs)
    right = ax.twinx()
    score = [score_by.get(e, math.nan) for e in epochs]
    right.plot(epochs, score, color="#d62728", marker="s", linewidth=2, label=curve["score_label"])
    right.set_ylabel(curve["score_label"], color="#d62728")
    lines = ax.get_lines() + right.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper center", frameon=False, ncol=2)
    ax.set_title(title, fontsize=10)
    return fig


def _by_epoch(values: Mapping) -> dict[int, float]:
    """JSON's string keys back to epochs; a missing value (None) to NaN, a gap in the line."""
    return {int(e): math.nan if v is None else float(v) for e, v in values.items()}


def _started_at(recorded: object) -> float | None:
    """kohya records time.time(); some trainers (the demo's) an ISO time in UTC."""
    if isinstance(recorded, (int, float)):
        return float(recorded)
    try:
        return float(calendar.timegm(time.strptime(str(recorded), "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None
