"""Run one job, or a sweep of them:

python -m bespoke_exp epoch=3 guidance=7.5
python -m bespoke_exp -m epoch=1,2,...,10 guidance=5,7.5,10
python -m bespoke_exp -m epoch=all lora_scale=0.6,0.8,1.0   # every epoch in the checkpoint folder
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bespoke_exp.config import CONF_DIR, ConfigError, literal_text, register_resolvers
from bespoke_exp.generate.checkpoints import CheckpointError
from bespoke_exp.generate.pipeline import LoraLoadError, ModelLoadError, pin_worker_device
from bespoke_exp.job.images import GenerationError
from bespoke_exp.job.run import run_job
from bespoke_exp.sweep.callback import close_open_sweeps
from bespoke_exp.sweep.command_line import prepare_command_line
from bespoke_exp.sweep.context import current_context
from bespoke_exp.tracking import TrackingError

log = logging.getLogger("bespoke_exp")
# Failures a user causes and can fix: one line each, no traceback (HYDRA_FULL_ERROR=1 shows it).
EXPECTED_ERRORS = (
    ConfigError,
    TrackingError,
    CheckpointError,
    ModelLoadError,
    LoraLoadError,
    GenerationError,
)


class SweepAborted(SystemExit):
    """A failure every later job would repeat (the base model can't load): stop the sweep once."""


class JobKilled(KeyboardInterrupt):
    """SIGTERM to a launcher worker: its job's run is marked KILLED and the other jobs go on."""


# A kill (SIGTERM) or a closed terminal or ssh session (SIGHUP) unwinds like Ctrl-C, so the running
# job is marked KILLED, not left RUNNING. `nohup` sets SIGHUP to be ignored, and so it stays.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _catch_stop_signals(handler) -> dict:
    """Install `handler` for every stop signal the process does not ignore; returns the old ones."""
    return {
        signum: signal.signal(signum, handler)
        for signum in _STOP_SIGNALS
        if signal.getsignal(signum) is not signal.SIG_IGN
    }


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    literal_text(cfg)
    sweep = current_context()
    if sweep is not None and sweep.in_worker():
        _run_in_worker(cfg, sweep)
    else:
        _run(cfg, sweep)


def _run_in_worker(cfg: DictConfig, sweep) -> None:
    """A job in a launcher's worker process (joblib, submitit): pin one GPU, and turn a SIGTERM
    (`kill PID`, SLURM's scancel or time limit) into a KILLED run instead of a run left RUNNING.
    The worker's own handler comes back afterwards: loky stops idle workers with SIGTERM."""
    pin_worker_device(sweep.job_index)
    previous = _catch_stop_signals(_kill_job)
    try:
        _run(cfg, sweep)
    except JobKilled as error:
        # Already on record as KILLED (run_job closes its run); the sweep counts it as failed
        # and a rerun redoes only this job.
        print(f"[bespoke_exp] job {sweep.job_index} killed: {error}", file=sys.stderr, flush=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _kill_job(signum: int, frame) -> None:
    _hung_up(signum)
    raise JobKilled(f"stopped by signal {signal.Signals(signum).name}")


def _run(cfg: DictConfig, sweep) -> None:
    try:
        run_job(cfg, output_dir=Path(HydraConfig.get().runtime.output_dir), sweep=sweep)
    except ModelLoadError as error:
        print(f"[bespoke_exp] {error}", file=sys.stderr)
        raise SweepAborted(1) from None
    except EXPECTED_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"[bespoke_exp] {type(error).__name__}: {error}", file=sys.stderr)
        if sweep is None:
            raise SystemExit(2 if isinstance(error, ConfigError) else 1) from None
    except Exception:
        if sweep is None:
            raise
        # Recorded on the job's run (traceback as an artifact); keep going so the sweep's
        # parent run gets closed.
        log.exception("job failed")


def _interrupt(signum: int, frame) -> None:
    _hung_up(signum)
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


class _Unattended:
    """An output stream whose terminal may be gone: after a hang-up, writing to it fails, and
    a failed print must not stop the runs from being closed."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _hung_up(signum: int) -> None:
    if signum == getattr(signal, "SIGHUP", None) and not isinstance(sys.stdout, _Unattended):
        sys.stdout, sys.stderr = _Unattended(sys.stdout), _Unattended(sys.stderr)


def cli() -> None:
    _catch_stop_signals(_interrupt)
    register_resolvers()
    try:
        sys.argv = [sys.argv[0], *prepare_command_line(sys.argv[1:])]
    except (ConfigError, ValueError) as error:  # a wrong-typed value, a bad 1,2,..., epoch=all with no files
        print(f"[bespoke_exp] {type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        main()
    except KeyboardInterrupt as error:
        try:
            close_open_sweeps(error)
        except KeyboardInterrupt:  # stopped again while closing: what is left, rank closes later
            print("[bespoke_exp] stopped again while closing the sweep", file=sys.stderr)
        # A signal still pending (delivered twice, or re-raised at the end of a deferred block)
        # must not turn the exit status 130 into death by SIGINT.
        for signum in (signal.SIGINT, *_STOP_SIGNALS):
            signal.signal(signum, signal.SIG_IGN)
        raise SystemExit(130) from None
    except SweepAborted as error:
        close_open_sweeps(RuntimeError("the base model could not be loaded (see above)"))
        raise SystemExit(error.code) from None
    except BaseException as error:
        close_open_sweeps(_reported_error(error))  # nothing open after a clean end
        raise


def _reported_error(error: BaseException) -> BaseException:
    """Hydra reports an error escaping its launcher and then calls sys.exit(1) in its handler;
    the parent run should record that error (a full disk, say), not `SystemExit: 1`."""
    hydra_exit = isinstance(error, SystemExit) and not error.__suppress_context__
    return error.__context__ if hydra_exit and error.__context__ is not None else error


if __name__ == "__main__":
    cli()
