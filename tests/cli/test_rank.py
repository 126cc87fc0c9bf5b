"""`python -m bespoke_exp.rank`: says when the sweep it ranks is not complete, refuses bad options
and a store without a sweep in one line each."""

from __future__ import annotations

import json
import os

import pytest

from bespoke_exp import rank, tracking
from tests.helpers import make_sweep


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("RUNNING", "the sweep is still RUNNING with 2 of its 3 jobs finished"),
        ("KILLED", "the sweep ended KILLED with 2 of its 3 jobs finished"),
    ],
)
def test_rank_says_when_the_sweep_is_not_complete(tracking_uri, capsys, status: str, said: str) -> None:
    make_sweep(tracking_uri, status=status, jobs=3, pid=os.getpid())  # a live process: no orphan
    assert rank.main(["--tracking-uri", tracking_uri]) == 0
    assert capsys.readouterr().out.startswith(f"INCOMPLETE: {said}; the ranking below covers")
    assert rank.main(["--tracking-uri", tracking_uri, "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["complete"] is False and ranked["incomplete"] == said


def test_a_complete_sweep_is_ranked_without_a_caveat(tracking_uri, capsys) -> None:
    make_sweep(tracking_uri)
    assert rank.main(["--tracking-uri", tracking_uri, "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["complete"] is True and ranked["incomplete"] is None


def test_bad_rank_options_are_one_line(tracking_uri, capsys) -> None:
    make_sweep(tracking_uri)
    for options, said in (
        (["--n-boot", "0"], "'0' must be an integer >= 100"),
        (["--metric", "no/such"], "'no/such' is not a metric"),
    ):
        with pytest.raises(SystemExit) as exit_:
            rank.main(["--tracking-uri", tracking_uri, *options])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_rank_without_a_sweep_exits_non_zero_and_says_so(tracking_uri, capsys):
    tracking.connect(tracking_uri, "empty")  # a store and experiment, but no sweep in it
    assert rank.main(["--tracking-uri", tracking_uri, "--experiment", "empty"]) == 2
    assert f"no sweep in experiment 'empty' at {tracking_uri}" in capsys.readouterr().err
