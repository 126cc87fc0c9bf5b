"""Run one job, or a sweep of them:

python -m bespoke_exp epoch=3 guidance=7.5
python -m bespoke_exp -m epoch=1,2,...,10 guidance=5,7.5,10
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bespoke_exp.config import CONF_DIR, register_resolvers
from bespoke_exp.overrides import expand_arguments
from bespoke_exp.sweep.callback import close_interrupted_sweeps
from bespoke_exp.sweep.context import current_context
from bespoke_exp.sweep.job import run_job

log = logging.getLogger("bespoke_exp")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    sweep = current_context()
    try:
        run_job(cfg, output_dir=Path(HydraConfig.get().runtime.output_dir), sweep=sweep)
    except Exception:
        if sweep is None:
            raise
        # Recorded on the job's run; keep going so the sweep's parent run gets closed.
        log.exception("job failed")


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def cli() -> None:
    # A kill (SIGTERM) unwinds like Ctrl-C, so the running job is marked KILLED, not left RUNNING.
    signal.signal(signal.SIGTERM, _interrupt)
    register_resolvers()
    sys.argv = [sys.argv[0], *expand_arguments(sys.argv[1:])]
    try:
        main()
    except KeyboardInterrupt:
        close_interrupted_sweeps()
        raise SystemExit(130) from None


if __name__ == "__main__":
    cli()
