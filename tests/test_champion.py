"""The @champion alias moves only between comparable versions (same prompt set, scoring
identity and ranked metric, read from the registry tags), in the ranked metric's direction."""

from __future__ import annotations

import pytest

from bespoke_exp import analysis, tracking
from bespoke_exp.analysis.champion import champion_decision, move_alias_if_better
from bespoke_exp.generate.checkpoints import file_sha256
from tests.conftest import one_job_sweep


@pytest.fixture()
def tracker(tracking_uri):
    return tracking.connect(tracking_uri, "champion")


def _registrar(tracker, tmp_path, name="punks"):
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"weights")
    run = tracking.start_run(tracker, "sweep")
    tracking.log_artifact(tracker, run, lora, "champion")

    def register(score: float, **identity: str) -> bool:
        tags = {"score": f"{score:.6f}", **identity}
        version = tracking.register_model_version(
            tracker, name, run_id=run, artifact_path="champion", tags=tags
        )
        return move_alias_if_better(tracker, name, version, score)

    return register


def _holder(tracker, name="punks") -> str:
    return str(tracker.client.get_model_version_by_alias(name, "champion").version)


def test_the_alias_stays_when_prompts_scoring_or_metric_differ(tracker, tmp_path, capsys):
    register = _registrar(tracker, tmp_path)
    same = {"prompt_set": "p-abc", "scoring_identity": "s-1", "ranked_metric": "score"}
    assert register(0.5, **same)
    assert not register(0.9, **{**same, "prompt_set": "p-xyz"})  # easier prompts, higher score
    assert "prompt_set 'p-abc' there, 'p-xyz' here" in capsys.readouterr().out
    assert not register(0.9, **{**same, "scoring_identity": "s-2"})
    assert not register(0.9, **{k: v for k, v in same.items() if k != "scoring_identity"})  # unknown
    assert _holder(tracker) == "1"
    assert register(0.6, **same) and _holder(tracker) == "5"
    assert len(tracker.client.search_model_versions("name = 'punks'")) == 5  # every version kept


def test_a_lower_is_better_metric_moves_the_alias_to_the_lower_score(tracker, tmp_path):
    register = _registrar(tracker, tmp_path)
    width = {"ranked_metric": "grid/aa_width"}  # lower is better in the metrics registry
    assert register(3.0, **width)
    assert not register(4.0, **width)
    assert register(2.0, **width) and _holder(tracker) == "3"


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
