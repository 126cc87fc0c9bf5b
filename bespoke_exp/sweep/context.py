"""Which sweep a job belongs to. The sweep's Hydra callback writes `<sweep dir>/sweep.json`
(parent run id, sweep id, job count); each job reads it explicitly, not through a
global, so jobs in other processes or on other machines attach to the same parent."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

STATE_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepContext:
    """What a job needs to know about the sweep it belongs to."""

    sweep_id: str
    parent_run_id: str
    total_jobs: int | None
    job_index: int = 0  # 0-based, Hydra's job.num
    # "host:pid" of the process that started the sweep. A job running elsewhere runs in a
    # launcher's worker (joblib, submitit), where a kill should end that job, not the sweep.
    launched_by: str = ""

    def in_worker(self) -> bool:
        """True when this job runs in a process other than the one that launched the sweep."""
        return bool(self.launched_by) and self.launched_by != this_process()


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def expand_jobs(task_overrides: list[str], sweeper_params: dict | None = None) -> list[list[str]] | None:
    """Each job's overrides, in the order Hydra's basic sweeper runs them (the product of every
    sweep's values); None when the overrides can't be parsed here (Hydra will say why)."""
    overrides = list(task_overrides) + [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return None
    axes = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(job) for job in itertools.product(*axes)]


def count_jobs(task_overrides: list[str], sweeper_params: dict | None = None) -> int | None:
    """How many jobs the basic sweeper will run: the product of each sweep's length."""
    jobs = expand_jobs(task_overrides, sweeper_params)
    return None if jobs is None else len(jobs)


def write_state(sweep_dir: Path, context: SweepContext) -> Path:
    """Write `sweep.json`, refusing to overwrite another sweep's (exclusive create)."""
    path = sweep_dir / STATE_FILE
    try:
        with path.open("x") as handle:
            json.dump(asdict(context), handle, indent=2)
    except FileExistsError:
        other = json.loads(path.read_text() or "{}").get("sweep_id", "another sweep")
        raise RuntimeError(
            f"{path} already belongs to sweep {other}; each sweep needs its own hydra.sweep.dir"
        ) from None
    return path


def read_context(sweep_dir: Path, job_index: int) -> SweepContext:
    path = sweep_dir / STATE_FILE
    if not path.is_file():
        raise RuntimeError(
            f"{path} is missing: the sweep's MLflow parent run was not created "
            "(see the warning from SweepCallback above; usually the tracking store is unreachable)"
        )
    data = json.loads(path.read_text())
    return SweepContext(
        sweep_id=data["sweep_id"],
        parent_run_id=data["parent_run_id"],
        total_jobs=data.get("total_jobs"),
        job_index=job_index,
        launched_by=data.get("launched_by", ""),
    )


def current_context() -> SweepContext | None:
    """The running multirun's context, or None for a single run."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is None or hydra_cfg.mode.name != "MULTIRUN":
        return None
    return read_context(Path(hydra_cfg.sweep.dir), int(hydra_cfg.job.num))
