"""Work that a Ctrl-C or a kill must not cut in half.

A KeyboardInterrupt raised inside a SQLite write leaves this process's own connection
holding the database lock: every later write from the process, such as the one that marks
the run KILLED, then waits out MLflow's 20 s busy timeout and fails with "database is
locked", so the run stays RUNNING. Raised inside diffusers' LoRA loader, it comes out of
native code as some other error, so a killed job would be reported as a failed one.
Deferring the signal until the block ends avoids both. A second signal during the same
block is acted on at once, so work that hangs can still be interrupted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Ctrl-C, a kill, and the hang-up of a closed terminal or ssh session (not on Windows).
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, then deliver the first to its usual handler."""
    if threading.current_thread() is not threading.main_thread():  # only it receives signals
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame) -> None:
        if received:
            raise KeyboardInterrupt(f"stopped by a second {signal.Signals(signum).name}")
        received.append(signum)

    # A signal the process ignores (as a shell's background job ignores SIGINT) stays ignored.
    watched = [signum for signum in _SIGNALS if signal.getsignal(signum) is not signal.SIG_IGN]
    previous = {signum: signal.signal(signum, hold) for signum in watched}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])
