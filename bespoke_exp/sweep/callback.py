"""One MLflow parent run per Hydra multirun.

The Hydra callback creates the parent run when the sweep starts and writes its id to
`<sweep dir>/sweep.json` (see sweep.context), so jobs in any process attach to it.
At the end the callback hands the finished jobs to the end-of-sweep analysis the config names
(`hydra.callbacks.mlflow_sweep.analyse`: ranking, report, champion) and closes the parent with
the children's overall status. Jobs reused from earlier
sweeps (identical work already FINISHED) are recorded on the parent and count as done.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from bespoke_exp import tracking
from bespoke_exp.config import (
    ConfigError,
    composition_problem,
    literal_text,
    register_resolvers,
    search_path_overrides,
)
from bespoke_exp.config.overrides import expand_jobs, override_key
from bespoke_exp.interrupts import interrupts_deferred
from bespoke_exp.job.run import SweepContext, this_process
from bespoke_exp.job.validate import config_problems, guidance_warning, raise_problems
from bespoke_exp.sweep.context import new_sweep_id, read_context, write_state

# Launcher workers (joblib's loky processes, submitit's job processes) never run the CLI, but
# they unpickle this callback before they compose their job's config, whose `paths` and
# `hydra.sweep.dir` use these resolvers: registering them here makes every worker able to.
register_resolvers()

# Parent runs this process opened and not yet closed. A Ctrl-C, a kill or an error can land
# anywhere, including inside Hydra between jobs, so the CLI closes these on the way out.
_OPEN_PARENTS: dict[str, tuple[tracking.Tracker, SweepContext]] = {}
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class SweepCallback(Callback):
    """Hydra callback: parent run at multirun start, its final status at the end.

    `analyse` is the dotted path of the end-of-sweep analysis, `f(config, context, register) ->
    summary text`, run once every job is done (conf/config.yaml names the sweep's report; None:
    only the parent's status). Hydra turns exceptions in callbacks into warnings, so every
    failure here ends in a SystemExit with the parent run closed and the reason printed.
    """

    def __init__(self, analyse: str | None = None) -> None:
        self.analyse = analyse

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            self._start(config)
        except SystemExit:
            raise
        except Exception as error:  # Hydra would only warn, and run every job without a parent
            close_open_sweeps(error)
            expected = isinstance(error, (ConfigError, tracking.TrackingError))
            reason = error if expected else f"{type(error).__name__}: {error}"
            print(f"[bespoke_exp] sweep not started: {reason}", file=sys.stderr)
            raise SystemExit(2 if expected else 1) from None

    def _start(self, config: DictConfig) -> None:
        overrides = list(config.hydra.overrides.task)
        jobs = expand_jobs(overrides, dict(config.hydra.sweeper.get("params") or {}))
        search_path = user_search_path(config)
        raise_problems(launcher_problems(config) + sweep_problems(config, jobs, search_path))
        warning = guidance_warning(config, swept_guidances(config, jobs))
        if warning:
            print(f"[bespoke_exp] warning: {warning}", file=sys.stderr, flush=True)
        tracker = _connect(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot create the sweep folder hydra.sweep.dir={sweep_dir}: {error}"
            ) from None
        orphans = tracking.close_orphans(tracker.uri, tracker.client)
        if orphans:
            print(
                f"[bespoke_exp] marked KILLED {len(orphans)} runs whose process is gone: {', '.join(orphans)}"
            )
        total = None if jobs is None else len(jobs)
        sweep_id = new_sweep_id()
        with interrupts_deferred():  # an open parent is always one that will be closed
            parent = start_parent(
                tracker,
                config,
                f"sweep {sweep_id}",
                overrides,
                total,
                tags={
                    tracking.TAG_SWEEP_ID: sweep_id,
                    tracking.TAG_ROLE: "sweep",
                    "sweep_dir": str(sweep_dir),
                },
                search_path=search_path,
            )
            state = SweepContext(
                sweep_id=sweep_id, parent_run_id=parent, total_jobs=total, launched_by=this_process()
            )
            _OPEN_PARENTS[parent] = (tracker, state)
        write_state(sweep_dir, state)
        print(f"[bespoke_exp] sweep {sweep_id}: {total} jobs, parent run {parent}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        context = read_context(Path(str(config.hydra.sweep.dir)), 0)
        try:
            analyse = get_method(self.analyse) if self.analyse else None
            _end_sweep(config, context, analyse)
        except SystemExit:
            raise
        except BaseException as error:  # the parent must not stay RUNNING, whatever happened
            close_open_sweeps(error)
            raise SystemExit(130 if isinstance(error, KeyboardInterrupt) else 1) from None


def start_parent(
    tracker: tracking.Tracker,
    config: DictConfig,
    name: str,
    overrides: list[str],
    total: int | None,
    tags: dict[str, str],
    search_path: list[str],
) -> str:
    """A sweep's parent run: its command line as params, and as `sweep/settings.json` what
    `rank` and `rescore` need to redo its analysis as it was run (kept out of the params, which
    the UI's image cards list above every picture): its overrides, the config folders it was
    composed from beside conf/ (`--config-dir`, `hydra.searchpath`), analysis and store."""
    parent = tracking.start_run(
        tracker, name, params={"sweep.overrides": " ".join(overrides), "sweep.jobs": str(total)}, tags=tags
    )
    settings = {
        "overrides": list(overrides),  # exact: the params' joined string can't be split back safely
        "search_path": list(search_path),
        "analysis": OmegaConf.to_container(config.analysis, resolve=True),
        "tracking": {"uri": str(config.tracking.uri), "experiment": str(config.tracking.experiment)},
        "prompts": str(config.prompts.name),
    }
    tracking.log_dict(tracker, parent, settings, tracking.SWEEP_SETTINGS)
    return parent


def launcher_problems(config: DictConfig) -> list[str]:
    """A parallel launcher needs a tracking server: its workers would all write one SQLite
    file at once (MLflow gives no guarantee there, and workers on other nodes can't reach it)."""
    launcher = str(config.hydra.launcher.get("_target_", BASIC_LAUNCHER))
    problem = sqlite_parallel_problem(launcher, str(config.tracking.uri))
    return [problem] if problem else []


def sqlite_parallel_problem(launcher: str, uri: str) -> str | None:
    if launcher == BASIC_LAUNCHER or not uri.startswith("sqlite:"):
        return None
    name = launcher.rsplit(".", 1)[-1]
    return (
        f"the {name} launcher runs jobs in parallel processes, but tracking.uri={uri!r} is a SQLite "
        "file: start an MLflow tracking server (`mlflow server --host 127.0.0.1 --port 5000 "
        "--backend-store-uri sqlite:///PATH/mlflow.db --artifacts-destination PATH/artifacts`, see "
        "README 'Scaling out') and add `tracking=server tracking.uri=http://127.0.0.1:5000`"
    )


def swept_guidances(config: DictConfig, jobs: list[list[str]] | None) -> list[float]:
    """The guidance of every job the grid holds (the config's own when it is not swept)."""
    values = [
        override.split("=", 1)[1]
        for job in jobs or []
        for override in job
        if override_key(override) == "guidance"
    ]
    try:
        return [float(v) for v in values] or [float(config.guidance)]
    except ValueError:  # not a number: the job's own check says so
        return []


def user_search_path(config: DictConfig) -> list[str]:
    """The config folders a sweep was composed from beside conf/ and Hydra's own, in order:
    `--config-dir` and `hydra.searchpath` entries, as URIs (file://..., pkg://...)."""
    builtin = ("hydra", "main", "schema")
    return [
        f"{source.schema}://{source.path}"
        for source in config.hydra.runtime.get("config_sources") or []
        if source.provider not in builtin
    ]


def sweep_problems(
    config: DictConfig, jobs: list[list[str]] | None, search_path: list[str] = ()
) -> list[str]:
    """Every problem of every job's composed config (swept values included), one line each.

    Only the basic sweeper's grid can be enumerated here; with another sweeper the shared
    settings are checked now and each job checks its own values when it starts. Jobs are
    composed with the sweep's own config folders (`search_path`).
    """
    if jobs is None or config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return config_problems(literal_text(config.copy()))
    from hydra import compose

    problems: dict[str, None] = {}
    for job in jobs:
        try:
            composed = compose(
                config_name=str(config.hydra.job.config_name),
                overrides=[*search_path_overrides(search_path), *job],
            )
        except Exception as error:  # a wrong-typed swept value, a group option that is not there
            problems[composition_problem(error)] = None
            continue
        problems.update(dict.fromkeys(config_problems(literal_text(composed))))
    return list(problems)


def _end_sweep(
    config: DictConfig,
    context: SweepContext,
    analyse: Callable[[DictConfig, SweepContext, bool], str] | None,
) -> None:
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
    # A sweep with failed jobs is still ranked, but registers no model version.
    analysed = finished + len(reused) > 0 and _analyse(analyse, config, context, register=not failed)
    if failed:  # the parent's page says why, as a job's does
        errors = [run.data.tags["error"] for run in children if "error" in run.data.tags]
        first = f"; the first: {errors[0][:1000]}" if errors else ""
        tracking.set_tags(
            tracker, context.parent_run_id, {"error": f"{failed} of {total} jobs failed{first}"}
        )
    with interrupts_deferred():  # a kill now must not turn a closed sweep KILLED
        tracking.finish_run(tracker, context.parent_run_id, "FAILED" if failed else "FINISHED")
        _OPEN_PARENTS.pop(context.parent_run_id, None)
    print(summary_text(tracker, context, children, reused), flush=True)
    if failed:
        # Hydra swallows callback exceptions but not SystemExit: the sweep must exit non-zero.
        print(f"[bespoke_exp] {failed} of {total} jobs failed; no model version registered", file=sys.stderr)
        raise SystemExit(1)
    if not analysed:
        raise SystemExit(1)


def _analyse(
    analyse: Callable[[DictConfig, SweepContext, bool], str] | None,
    config: DictConfig,
    context: SweepContext,
    register: bool,
) -> bool:
    """Run the end-of-sweep analysis on the jobs that finished; a failure there is reported,
    never allowed to hide the jobs' own status."""
    if analyse is None:
        return True
    try:
        print("\n" + analyse(config, context, register), flush=True)
    except Exception as error:
        logging.getLogger(__name__).exception("sweep analysis failed")
        print(
            f"[bespoke_exp] analysis of sweep {context.sweep_id} failed: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return False
    return True


def close_open_sweeps(error: BaseException) -> None:
    """Close this process's open parent runs: KILLED after Ctrl-C or a kill, FAILED after any
    other error, with the reason as a tag (Hydra never calls on_multirun_end then). Re-running
    the same command redoes only the unfinished jobs. What it prints is what the store holds:
    a parent it could not close (a full disk) is reported as still RUNNING."""
    interrupted = isinstance(error, KeyboardInterrupt)
    reason = f"{type(error).__name__}: {error}"
    state = tracking.failure_status(error)
    while _OPEN_PARENTS:
        parent_run_id, (tracker, context) = _OPEN_PARENTS.popitem()
        what = "interrupted" if interrupted else f"stopped: {reason}"
        try:
            # The launcher has returned or is being torn down: a job run still RUNNING belongs to a
            # worker that died without closing it (SIGKILL, OOM, a lost node).
            killed = tracking.close_running_children(
                tracker, parent_run_id, f"the sweep ended ({reason}) while this job was still running"
            )
            if killed:
                print(f"[bespoke_exp] marked KILLED {len(killed)} job runs left RUNNING by dead workers")
            tracking.fail_run(tracker, parent_run_id, error)
        except Exception as close_error:  # the store itself may be what failed
            print(
                f"[bespoke_exp] sweep {context.sweep_id} {what}; parent run {parent_run_id} could not be "
                f"marked {state} ({tracking.first_line(close_error)}): it stays RUNNING until the "
                "next sweep or rank on this machine marks it KILLED",
                file=sys.stderr,
            )
            continue
        print(
            f"[bespoke_exp] sweep {context.sweep_id} {what}; parent run {parent_run_id} marked {state}. "
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
        # The parent run's metrics tab: epoch curves, an epoch slider per prompt and seed.
        f"dashboard: {tracking.run_ui_url(tracker, context.parent_run_id)}",
    ]
    return "\n".join(lines)


def _connect(config: DictConfig) -> tracking.Tracker:
    t = config.tracking
    return tracking.connect(t.uri, t.experiment, t.artifact_location)
