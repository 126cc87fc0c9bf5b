"""Store calls that a Ctrl-C or a kill cannot cut in half (see `bespoke_exp.interrupts`)."""

from __future__ import annotations

import functools

from bespoke_exp.interrupts import interrupts_deferred


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
