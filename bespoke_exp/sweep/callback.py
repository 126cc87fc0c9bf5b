"""One MLflow parent run per Hydra multirun.

The Hydra callback creates the parent run when the sweep starts and writes its id to
`<sweep dir>/sweep.json` (see sweep.context), so jobs in any process attach to it.
At the end the callback ranks the finished jobs (bespoke_exp.analysis: report, champion)
and closes the parent with the children's overall status. Jobs reused from earlier
sweeps (identical work already FINISHED) are recorded on the parent and count as done.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bespoke_exp import tracking
from bespoke_exp.config import ConfigError
from bespoke_exp.sweep.context import STATE_FILE, SweepContext, count_jobs, new_sweep_id, read_context
from bespoke_exp.sweep.validate import validate_job_config

# Parent runs this process opened and not yet closed. A Ctrl-C or kill can land anywhere,
# including inside Hydra between jobs, so the CLI closes these as KILLED on the way out.
_OPEN_PARENTS: dict[str, tuple[tracking.Tracker, SweepContext]] = {}


class SweepCallback(Callback):
    """Hydra callback: parent run at multirun start, its final status at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            # Settings every job shares are checked once, before a parent run exists.
            validate_job_config(config)
            tracker = _connect(config)
        except (ConfigError, tracking.TrackingError) as error:
            print(f"[bespoke_exp] sweep not started: {error}", file=sys.stderr)
            raise SystemExit(2) from None  # Hydra turns other callback exceptions into warnings
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = list(config.hydra.overrides.task)
        total = count_jobs(overrides, dict(config.hydra.sweeper.get("params") or {}))
        sweep_id = new_sweep_id()
        parent = tracking.start_run(
            tracker,
            f"sweep {sweep_id}",
            params={"sweep.overrides": " ".join(overrides), "sweep.jobs": str(total)},
            tags={tracking.TAG_SWEEP_ID: sweep_id, tracking.TAG_ROLE: "sweep", "sweep_dir": str(sweep_dir)},
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        state = SweepContext(sweep_id=sweep_id, parent_run_id=parent, total_jobs=total)
        (sweep_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        _OPEN_PARENTS[parent] = (tracker, state)
        print(f"[bespoke_exp] sweep {sweep_id}: {total} jobs, parent run {parent}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        context = read_context(sweep_dir, 0)
        _OPEN_PARENTS.pop(context.parent_run_id, None)
        tracker = _connect(config)
        children, reused = tracking.sweep_runs(tracker, context.parent_run_id)
        finished = sum(run.info.status == "FINISHED" for run in children)
        # A job that died before creating its run counts as failed too.
        total = max(len(children) + len(reused), context.total_jobs or 0)
        failed = total - finished - len(reused)
        tracking.log_metrics(
            tracker,
            context.parent_run_id,
            {"sweep/jobs_finished": finished, "sweep/jobs_reused": len(reused), "sweep/jobs_failed": failed},
        )
        analysed = finished + len(reused) > 0 and _analyse(config, context)
        tracking.finish_run(tracker, context.parent_run_id, "FAILED" if failed else "FINISHED")
        print(summary_text(tracker, context, children, reused), flush=True)
        if failed:
            # Hydra swallows callback exceptions but not SystemExit: the sweep must exit non-zero.
            print(f"[bespoke_exp] {failed} of {total} jobs failed", file=sys.stderr)
            raise SystemExit(1)
        if not analysed:
            raise SystemExit(1)


def _analyse(config: DictConfig, context: SweepContext) -> bool:
    """Rank, report and register on the jobs that finished; a failure here is reported,
    never allowed to hide the jobs' own status."""
    from bespoke_exp import analysis  # pandas, matplotlib: only when a sweep ends

    t = config.tracking
    try:
        sweep = analysis.load_sweep(
            context.parent_run_id, tracking_uri=str(t.uri), experiment=str(t.experiment)
        )
        rec = analysis.report_sweep(
            sweep, registered_model=t.get("registered_model"), **analysis.options_from(config.analysis)
        )
    except Exception as error:
        logging.getLogger(__name__).exception("sweep analysis failed")
        print(
            f"[bespoke_exp] analysis of sweep {context.sweep_id} failed: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return False
    print("\n" + rec.to_markdown(top=5), flush=True)
    if sweep.sweep_dir:
        print(f"report: {sweep.sweep_dir / analysis.REPORT_DIR}", flush=True)
    return True


def close_interrupted_sweeps() -> None:
    """After Ctrl-C or a kill, mark this process's open parent runs KILLED (Hydra never
    calls on_multirun_end then). Re-running the same command redoes only unfinished jobs."""
    while _OPEN_PARENTS:
        parent_run_id, (tracker, context) = _OPEN_PARENTS.popitem()
        tracking.finish_run(tracker, parent_run_id, "KILLED")
        print(
            f"[bespoke_exp] sweep {context.sweep_id} interrupted; parent run {parent_run_id} marked KILLED. "
            "Run the same command again to resume: finished jobs are skipped.",
            file=sys.stderr,
        )


def summary_text(tracker: tracking.Tracker, context: SweepContext, children: list, reused: list) -> str:
    lines = [
        "",
        f"sweep {context.sweep_id}: {len(children)} job runs under parent {context.parent_run_id}"
        + (f", {len(reused)} skipped (identical runs already FINISHED, reused)" if reused else ""),
    ]
    for run in sorted(children, key=lambda r: r.info.run_name or ""):
        lines.append(f"  {run.info.status:<9} {run.info.run_name:<24} {run.info.run_id}")
        if run.info.status != "FINISHED" and "error" in run.data.tags:
            lines.append(f"            {run.data.tags['error'][:200]}")
    for run in sorted(reused, key=lambda r: r.info.run_name or ""):
        lines.append(f"  {'REUSED':<9} {run.info.run_name:<24} {run.info.run_id}")
    lines += [
        f"experiment {tracker.experiment_name!r} (id {tracker.experiment_id}) in {tracker.uri}",
        f"browse:  {tracker.ui_command()}   then open {tracker.ui_url()}",
    ]
    return "\n".join(lines)


def _connect(config: DictConfig) -> tracking.Tracker:
    t = config.tracking
    return tracking.connect(str(t.uri), str(t.experiment), t.get("artifact_location"))
