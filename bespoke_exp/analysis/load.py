"""A finished sweep read back from MLflow: one row per job, one row per image.

from bespoke_exp import analysis
sweep = analysis.load_sweep()                 # latest sweep (or sweep="<id>")
sweep.runs[["epoch", "guidance", "score", "adherence/pass_rate"]]

Each job run's axis tags (config.SWEEP_AXES: epoch, guidance, lora_scale, ...) become columns
of both tables; the analysis ranks every combination of the axes the sweep varied.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from bespoke_exp import tracking
from bespoke_exp.analysis.statistics import EXTRA_AXES
from bespoke_exp.config import SWEEP_AXES, compose_config
from bespoke_exp.config.params import BASE_EPOCH
from bespoke_exp.config.schema import AnalysisConfig, settings_from

_PROMPT_TEXT = re.compile(r"prompts\.items\..+\.text")  # a job's params: prompts.items.<id>.text


class AnalysisError(RuntimeError):
    """The sweep can't be analysed (no finished job); the message says why."""


@dataclass(frozen=True)
class Sweep:
    """One sweep's finished jobs: `runs` has a row per job, `images` a row per image."""

    tracker: tracking.Tracker
    parent_run_id: str
    sweep_id: str
    # run_id, run_name, epoch, guidance[, lora_scale ...], checkpoint, checkpoint_sha256, reused, metrics...
    runs: pd.DataFrame
    images: (
        pd.DataFrame
    )  # run_id, epoch, guidance[, lora_scale ...], checkpoint, prompt_id, split, seed, metrics...
    final_epoch: int | None  # the trainer's last epoch (checkpoint.epochs)
    epochs: list[int]  # every epoch the sweep asked for, including failed jobs'
    guidances: list[float]
    cells: int
    sweep_dir: Path | None  # the Hydra sweep folder, when it is on this machine
    prompt_set: str | None = None  # prompts.name of the jobs
    scoring_identity: str | None = None  # shared by every job, or None when they differ
    analysis_settings: AnalysisConfig = field(default_factory=AnalysisConfig)  # what the sweep ran with
    # Every value each further axis (lora_scale, ...) was asked for, failed jobs' included.
    levels: dict[str, list[float]] = field(default_factory=dict)
    status: str = "FINISHED"  # the parent run's
    jobs_expected: int | None = None  # the jobs the sweep was launched with (None: unknown)
    jobs_unfinished: int = 0  # job runs not FINISHED: failed, killed or still running
    overrides: list[str] = field(default_factory=list)  # the sweep's command line (its settings.json)
    guidance_range: tuple[float, float] | None = None  # model.guidance_range of the jobs
    train_logs: str | None = None  # checkpoint.train_logs: the trainer's TensorBoard logs

    @cached_property
    def training_record(self) -> tuple[dict[str, object] | None, list[str]]:
        """The training settings the header of the latest swept epoch records (every epoch of a
        training run records the same ones; None when no swept checkpoint has them) and the
        prompt texts the sweep ran: read from the store once, for the training curve and the
        next run's trainer config alike."""
        loras = self.runs[self.runs["epoch"] != BASE_EPOCH].sort_values("epoch", ascending=False)
        for run_id in loras["run_id"]:
            training = tracking.load_dict(self.tracker, run_id, tracking.TRAINING_SETTINGS)
            if training:
                params = tracking.get_run(self.tracker, run_id).data.params
                return training, [v for k, v in sorted(params.items()) if _PROMPT_TEXT.fullmatch(k)]
        return None, []

    def incomplete(self) -> str | None:
        """Why this sweep's ranking is not final (None when every job it launched finished):
        what `rank` says above a ranking of a running or killed sweep, and why no champion is
        registered from it."""
        done = len(self.runs)
        expected = max(self.jobs_expected or 0, done + self.jobs_unfinished)
        if done < expected:
            if self.status == "FINISHED":  # e.g. the rescore of a sweep whose jobs did not all finish
                return f"only {done} of the sweep's {expected} jobs finished"
            what = "is still RUNNING" if self.status == "RUNNING" else f"ended {self.status}"
            return f"the sweep {what} with {done} of its {expected} jobs finished"
        if self.status == "RUNNING":
            return "the sweep is still RUNNING (its end-of-sweep analysis has not finished)"
        return None


def default_tracking() -> tuple[str, str]:
    """The tracking URI and experiment a plain `python -m bespoke_exp` uses (same env precedence)."""
    t = compose_config().tracking
    return str(t.uri), str(t.experiment)


def load_sweep(
    sweep: str | None = None, *, tracking_uri: str | None = None, experiment: str | None = None
) -> Sweep:
    """Load a sweep's FINISHED job runs (its own and those it reused from earlier sweeps).

    Args:
        sweep: sweep id or parent run id; None for the latest sweep in the experiment.
        tracking_uri, experiment: default to what the sweep command uses.
    """
    if tracking_uri is None or experiment is None:
        default_uri, default_experiment = default_tracking()
        tracking_uri = tracking_uri or default_uri
        # A sweep run with another experiment config (experiment=bespoke_civitai) is found too.
        experiment = experiment or tracking.find_sweep_experiment(tracking_uri, sweep) or default_experiment
    tracker = tracking.open_store(tracking_uri, experiment)
    parent, children, reused = _pick_sweep(tracker, sweep)
    # A run this sweep both reused and ran as its own job (one baseline serving every lora_scale)
    # is one run: counted twice its images would weigh double.
    finished = list(
        {r.info.run_id: r for r in [*(r for r in children if r.info.status == "FINISHED"), *reused]}.values()
    )
    sweep_id = parent.data.tags.get(tracking.TAG_SWEEP_ID, parent.info.run_id)
    reused_ids = {r.info.run_id for r in reused}
    rows, image_rows = [], []
    for run in finished:
        job = _job_columns(run)
        rows.append(
            {
                **job,
                "run_name": run.info.run_name,
                "checkpoint_sha256": run.data.tags.get("checkpoint_sha256"),
                "reused": run.info.run_id in reused_ids,
                **run.data.metrics,
            }
        )
        image_rows += [
            {**job, **row} for row in tracking.load_table(tracker, run.info.run_id, "metrics/per_image.json")
        ]
    runs = pd.DataFrame(rows)
    runs = runs.sort_values([a for a in SWEEP_AXES if a in runs.columns], ignore_index=True)
    first = finished[0].data.params
    settings = tracking.load_dict(tracker, parent.info.run_id, tracking.SWEEP_SETTINGS) or {}
    sweep_dir = Path(parent.data.tags["sweep_dir"]) if "sweep_dir" in parent.data.tags else None
    return Sweep(
        tracker=tracker,
        parent_run_id=parent.info.run_id,
        sweep_id=sweep_id,
        runs=runs,
        images=pd.DataFrame(image_rows),
        final_epoch=int(first["checkpoint.epochs"]) if "checkpoint.epochs" in first else None,
        epochs=sorted({int(r.data.tags["epoch"]) for r in children + reused if "epoch" in r.data.tags}),
        guidances=sorted(
            {float(r.data.tags["guidance"]) for r in children + reused if "guidance" in r.data.tags}
        ),
        cells=int(first.get("metrics.cells", 24)),
        sweep_dir=sweep_dir if sweep_dir and sweep_dir.is_dir() else None,
        prompt_set=first.get("prompts.name"),
        scoring_identity=_shared({r.data.tags.get("scoring_identity") for r in finished}),
        analysis_settings=settings_from(AnalysisConfig, settings.get("analysis")),
        levels={a: values for a in EXTRA_AXES if (values := _levels(children + reused, a))},
        status=parent.info.status,
        jobs_expected=_job_count(parent.data.params.get("sweep.jobs")),
        jobs_unfinished=sum(r.info.status != "FINISHED" for r in children),
        overrides=list(settings.get("overrides") or parent.data.params.get("sweep.overrides", "").split()),
        guidance_range=_guidance_range(first.get("model.guidance_range")),
        train_logs=None
        if first.get("checkpoint.train_logs", "null") == "null"
        else first["checkpoint.train_logs"],
    )


def _guidance_range(recorded: str | None) -> tuple[float, float] | None:
    try:
        low, high = json.loads(recorded or "null") or ()
        return float(low), float(high)
    except (ValueError, TypeError):  # not recorded (null), or a sweep from before the range
        return None


def _job_count(recorded: str | None) -> int | None:
    return int(recorded) if recorded and recorded.isdigit() else None


def _job_columns(run) -> dict:
    """What both tables say about a job: its run, its axes (from its tags) and its checkpoint."""
    tags = run.data.tags
    return {
        "run_id": run.info.run_id,
        "epoch": int(tags["epoch"]),
        "guidance": float(tags["guidance"]),
        **{a: float(tags[a]) for a in EXTRA_AXES if a in tags},
        "checkpoint": run.data.params.get("checkpoint.path"),
    }


def _levels(runs: list, axis: str) -> list[float]:
    return sorted({float(r.data.tags[axis]) for r in runs if axis in r.data.tags})


def _shared(values: set) -> str | None:
    return next(iter(values)) if len(values) == 1 else None


def _pick_sweep(tracker: tracking.Tracker, sweep: str | None) -> tuple:
    """(parent run, its children, the runs it reused) of the named sweep, or of the newest
    sweep with a finished job; sweeps skipped on the way are named on stderr."""
    parents = [tracking.find_sweep(tracker, sweep)] if sweep else tracking.recent_sweeps(tracker)
    if not parents:
        tracking.find_sweep(tracker, None)  # raises SweepNotFound naming the store and experiment
    empty = []
    for parent in parents:
        children, reused = tracking.sweep_runs(tracker, parent.info.run_id)
        if reused or any(r.info.status == "FINISHED" for r in children):
            for note in empty:
                print(f"[bespoke_exp] skipped {note}", file=sys.stderr)
            return parent, children, reused
        sweep_id = parent.data.tags.get(tracking.TAG_SWEEP_ID, parent.info.run_id)
        empty.append(
            f"sweep {sweep_id} (parent run {parent.info.run_id}) has no FINISHED job runs "
            f"({len(children)} runs, none finished; the sweep is {parent.info.status})"
        )
    raise AnalysisError("; ".join(empty) + ": nothing to rank")
