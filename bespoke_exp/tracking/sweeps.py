"""Finding sweeps and their runs in the store: a sweep's parent by sweep id or parent run id (or
the newest), the experiment that holds it, its child runs and the earlier runs it reused."""

from __future__ import annotations

import re

from bespoke_exp.tracking.store import (
    TAG_PARENT,
    TAG_REUSED_PREFIX,
    TAG_ROLE,
    TAG_SWEEP_ID,
    SweepNotFound,
    Tracker,
    _all_pages,
    _newest_with_tags,
    read_client,
    set_tags,
)


def child_runs(tracker: Tracker, parent_run_id: str) -> list:
    """Every run nested under the parent, all pages."""
    return _all_pages(tracker.client, [tracker.experiment_id], f"tags.`{TAG_PARENT}` = '{parent_run_id}'")


def sweep_runs(tracker: Tracker, parent_run_id: str) -> tuple[list, list]:
    """(runs nested under the parent, earlier runs the sweep reused instead of redoing)."""
    parent = tracker.client.get_run(parent_run_id)
    reused_ids = [v for k, v in sorted(parent.data.tags.items()) if k.startswith(TAG_REUSED_PREFIX)]
    return child_runs(tracker, parent_run_id), [tracker.client.get_run(i) for i in dict.fromkeys(reused_ids)]


def record_reuse(tracker: Tracker, parent_run_id: str, job_index: int, reused_run_id: str) -> None:
    """On the sweep's parent run: job `job_index` was not re-run, `reused_run_id` did its work."""
    set_tags(tracker, parent_run_id, {f"{TAG_REUSED_PREFIX}{job_index}": reused_run_id})


# Sweep ids (20261203-130101-ab12) and run ids (32 hex digits): anything else is refused before
# it reaches a search filter, where a quote would break the query.
_SWEEP_REF = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_sweep_ref(sweep: str) -> None:
    """SweepNotFound, with the expected forms, for a `--sweep` value no sweep can have."""
    if not _SWEEP_REF.fullmatch(sweep):
        raise SweepNotFound(
            f"--sweep {sweep!r} is neither a sweep id (like 20261203-130101-ab12) nor a parent run id "
            "(32 hex digits)"
        )


def find_sweep_experiment(uri: str, sweep: str | None = None) -> str | None:
    """The name of the experiment holding the sweep (the newest sweep when None), searching
    every active experiment in the store, which is only read; None when there is no such sweep."""
    if sweep:
        check_sweep_ref(sweep)
    client = read_client(uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return None
    clauses = f"tags.`{TAG_ROLE}` = 'sweep'" + (f" and tags.`{TAG_SWEEP_ID}` = '{sweep}'" if sweep else "")
    found = client.search_runs(
        list(experiments), clauses, order_by=["attributes.start_time DESC"], max_results=1
    )
    if not found and sweep:
        try:
            found = [client.get_run(sweep)]
        except Exception:  # not a run id either
            return None
    return experiments.get(found[0].info.experiment_id) if found else None


def find_sweep(tracker: Tracker, sweep: str | None = None):
    """The parent run of a sweep: the latest by default, else by sweep id or parent run id."""
    if sweep:
        check_sweep_ref(sweep)
    found = _newest_with_tags(
        tracker, {TAG_ROLE: "sweep", **({TAG_SWEEP_ID: sweep} if sweep else {})}, max_results=1
    )
    if found:
        return found[0]
    if sweep:
        try:
            run = tracker.client.get_run(sweep)
        except Exception:
            run = None
        if run is not None and run.data.tags.get(TAG_ROLE) == "sweep":
            return run
    what = f"sweep {sweep!r} (looked for a sweep id or parent run id)" if sweep else "sweep"
    raise SweepNotFound(
        f"no {what} in experiment {tracker.experiment_name!r} at {tracker.uri}; "
        "run one with `python -m bespoke_exp -m epoch=1,2,...,10 guidance=5,7.5,10`"
    )


def recent_sweeps(tracker: Tracker, max_results: int = 50) -> list:
    """The experiment's sweep parent runs, newest first."""
    return _newest_with_tags(tracker, {TAG_ROLE: "sweep"}, max_results=max_results)
