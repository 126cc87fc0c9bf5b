"""A Ctrl-C inside a shielded block (a store write, a LoRA load) waits for the block to end."""

from __future__ import annotations

import signal

import pytest

from bespoke_exp.interrupts import interrupts_deferred


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own Ctrl-C handler, whatever the test runner was started with (a shell's
    background job starts with SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_inside_the_block_lands_when_the_block_ends() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            finished.append("the rest of the block")
    assert finished == ["the rest of the block"]


def test_a_second_ctrl_c_stops_the_block_at_once() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            finished.append("the rest of the block")
    assert finished == []


def test_the_usual_handlers_are_back_after_the_block() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts_deferred():
        assert signal.getsignal(signal.SIGINT) is not before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_ignored_ctrl_c_stays_ignored_inside_the_block() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    finished = []
    with interrupts_deferred():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        finished.append("the rest of the block")
    assert finished == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
