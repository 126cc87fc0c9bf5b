"""The @champion alias moves only for a better recommendation, between comparable versions (same
prompt set, scoring identity and ranked metric, read from the registry tags), in the ranked
metric's direction; the champion is the file that was evaluated, or nothing."""

from __future__ import annotations

import pytest

from bespoke_exp import analysis, tracking
from bespoke_exp.analysis.champion import champion_decision
from bespoke_exp.generate.digests import file_sha256
from tests.helpers import one_job_sweep


@pytest.fixture()
def tracker(tracking_uri):
    return tracking.connect(tracking_uri, "champion")


def _register(tracker, tmp_path, score: float, **identity: str) -> str:
    """register_champion for a one-job sweep scoring `score`; `identity`: prompt_set,
    scoring_identity as recorded, and the metric it was ranked by (default score)."""
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"weights")
    sweep, rec = one_job_sweep(tracker, lora, sha=file_sha256(lora), score=score, **identity)
    return analysis.register_champion(sweep, rec, "punks")


def _holder(tracker, name="punks") -> str:
    return str(tracker.client.get_model_version_by_alias(name, "champion").version)


def test_the_alias_stays_when_prompts_scoring_or_metric_differ(tracker, tmp_path, capsys):
    same = {"prompt_set": "p-abc", "scoring_identity": "s-1"}
    assert _register(tracker, tmp_path, 0.6, **same) == "1" and _holder(tracker) == "1"
    _register(tracker, tmp_path, 0.9, **{**same, "prompt_set": "p-xyz"})  # easier prompts, higher score
    assert "prompt_set 'p-abc' there, 'p-xyz' here" in capsys.readouterr().out
    _register(tracker, tmp_path, 0.9, **{**same, "scoring_identity": "s-2"})
    _register(tracker, tmp_path, 0.9, prompt_set="p-abc")  # scoring identity unknown
    assert _holder(tracker) == "1"
    assert _register(tracker, tmp_path, 0.7, **same) == "5" and _holder(tracker) == "5"
    assert len(tracker.client.search_model_versions("name = 'punks'")) == 5  # every version kept


def test_a_lower_is_better_metric_moves_the_alias_to_the_lower_score(tracker, tmp_path):
    width = {"metric": "grid/aa_width", "poor": 10.0}  # lower is better in the metrics registry
    _register(tracker, tmp_path, 3.0, **width)
    _register(tracker, tmp_path, 4.0, **width)
    assert _holder(tracker) == "1"
    _register(tracker, tmp_path, 2.0, **width)
    assert _holder(tracker) == "3"


def test_decision_reasons() -> None:
    tags = {"ranked_metric": "score"}
    assert champion_decision(None, tags, 0.1) == (True, "no version held the alias")
    moved, why = champion_decision(("7", {"ranked_metric": "score", "score": "0.8"}), tags, 0.7)
    assert not moved and "version 7" in why and "0.8000" in why
    moved, why = champion_decision(("7", {"ranked_metric": "no/such"}), {"ranked_metric": "no/such"}, 1.0)
    assert not moved and "direction is unknown" in why
    moved, why = champion_decision(("7", {"ranked_metric": "grid/r2", "score": "0.5"}), tags, 0.9)
    assert not moved and "ranked_metric 'grid/r2' there, 'score' here" in why


def test_register_champion_records_comparability_and_respects_it(tracker, tmp_path, capsys):
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"evaluated weights")
    sweep, rec = one_job_sweep(
        tracker,
        lora,
        sha=file_sha256(lora),
        score=0.6,
        sweep_id="s-3",
        prompt_set="p-abc",
        scoring_identity="s-1",
    )
    assert analysis.register_champion(sweep, rec, "punks") == "1"
    tags = tracker.client.get_model_version("punks", "1").tags
    assert (tags["prompt_set"], tags["scoring_identity"], tags["ranked_metric"]) == ("p-abc", "s-1", "score")
    sweep, rec = one_job_sweep(
        tracker,
        lora,
        sha=file_sha256(lora),
        score=0.9,
        sweep_id="s-3",
        prompt_set="p-new",
        scoring_identity="s-1",
    )
    assert analysis.register_champion(sweep, rec, "punks") == "2"
    assert "registered without alias @champion" in capsys.readouterr().out
    assert _holder(tracker) == "1"


def test_a_sweep_judged_poor_overall_registers_its_version_but_never_moves_the_alias(
    tracker, tmp_path, capsys
):
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"evaluated weights")
    identity = {"sweep_id": "s-4", "prompt_set": "p-abc", "scoring_identity": "s-1"}
    # Colour noise from lora_scale=1000 scored 0.29: the best of a sweep that works at nothing.
    sweep, rec = one_job_sweep(tracker, lora, sha=file_sha256(lora), score=0.29, **identity)
    assert rec.diagnosis.code == "poor_overall"
    assert analysis.register_champion(sweep, rec, "punks") == "1"
    assert (
        "registered without alias @champion (the sweep's verdict is poor_overall" in capsys.readouterr().out
    )
    assert tracking.alias_holder(tracker, "punks", "champion") is None
    # A working sweep after it still takes the alias.
    sweep, rec = one_job_sweep(tracker, lora, sha=file_sha256(lora), score=0.7, **identity)
    assert analysis.register_champion(sweep, rec, "punks") == "2" and _holder(tracker) == "2"


def test_the_champion_alias_moves_only_for_a_better_score_and_history_is_kept(tracker, tmp_path):
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"weights")

    def register(score: float) -> str:
        sweep, rec = one_job_sweep(tracker, lora, sha=file_sha256(lora), score=score)
        return analysis.register_champion(sweep, rec, "punks")

    assert [register(s) for s in (0.6, 0.55, 0.7)] == ["1", "2", "3"]
    client = tracker.client
    assert str(client.get_model_version_by_alias("punks", "champion").version) == "3"
    register(0.65)  # worse than the holder: registered, the alias stays
    assert str(client.get_model_version_by_alias("punks", "champion").version) == "3"
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'punks'")) == [
        "1",
        "2",
        "3",
        "4",
    ]


def test_the_champion_is_the_evaluated_file_or_nothing(tracker, tmp_path, capsys):
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"evaluated weights")
    sweep, rec = one_job_sweep(tracker, lora, sha=file_sha256(lora), sweep_id="s-2")
    assert analysis.register_champion(sweep, rec, "punks") == "1"

    sweep, rec = one_job_sweep(
        tracker, lora, sha="0" * 64, sweep_id="s-2"
    )  # the file changed after evaluation
    assert analysis.register_champion(sweep, rec, "punks") is None
    assert "changed since run" in capsys.readouterr().out
    assert [str(v.version) for v in tracker.client.search_model_versions("name = 'punks'")] == ["1"]
