"""Store calls that a Ctrl-C or a kill cannot cut in half.

A KeyboardInterrupt raised inside a SQLite write leaves this process's own connection
holding the database lock. Every later write from the process, such as the one that marks
the run KILLED, then waits out MLflow's 20 s busy timeout and fails with "database is
locked", so the run stays RUNNING. Deferring the signal until the call returns avoids this.
A second signal during the same call is acted on at once, so a store that hangs can still
be interrupted.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver the first to its usual handler."""
    if threading.current_thread() is not threading.main_thread():  # only it receives signals
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame) -> None:
        if received:
            raise KeyboardInterrupt(f"stopped by a second {signal.Signals(signum).name}")
        received.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])


class ShieldedClient:
    """An MlflowClient whose every call runs with interrupts deferred."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def shielded(*args, **kwargs):
            with interrupts_deferred():
                return attribute(*args, **kwargs)

        return shielded
