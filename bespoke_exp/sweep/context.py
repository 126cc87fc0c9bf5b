"""Which sweep a job belongs to. The sweep's Hydra callback writes `<sweep dir>/sweep.json`
(parent run id, sweep id, job count); each job reads it explicitly, not through a
global, so jobs in other processes or on other machines attach to the same parent."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from bespoke_exp.job.run import SweepContext

STATE_FILE = "sweep.json"


def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


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
