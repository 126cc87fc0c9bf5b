"""Which sweep a job belongs to. The sweep's Hydra callback writes `<sweep dir>/sweep.json`
(parent run id, sweep id, job count); each job reads it explicitly, not through a
global, so jobs in other processes or on other machines attach to the same parent."""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass
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


def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def count_jobs(task_overrides: list[str], sweeper_params: dict | None = None) -> int | None:
    """How many jobs the basic sweeper will run: the product of each sweep's length."""
    overrides = list(task_overrides) + [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return None
    sizes = [len(list(o.sweep_iterator())) for o in parsed if o.is_sweep_override()]
    return math.prod(sizes)


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
    )


def current_context() -> SweepContext | None:
    """The running multirun's context, or None for a single run."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is None or hydra_cfg.mode.name != "MULTIRUN":
        return None
    return read_context(Path(hydra_cfg.sweep.dir), int(hydra_cfg.job.num))
