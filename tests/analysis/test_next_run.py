"""The next sweep: an axis whose best value sits at the edge of what was swept is extended past
it, and guidance into the range the model follows prompts in."""

from __future__ import annotations

from bespoke_exp.analysis.next_run import propose_sweeps
from bespoke_exp.config import compose_config
from bespoke_exp.job.validate import guidance_warning
from tests.helpers import problems_with

EPOCHS = list(range(1, 11))
CARD = ["epoch=1,2,3,4,5,6,7,8,9,10", "guidance=5,7.5,10"]  # the user's card command on the demo


def _axes(proposals) -> dict[str, tuple[list, str]]:
    return {p.axis: (p.values, p.command) for p in proposals}


def test_the_card_sweep_on_the_demo_is_sent_to_the_demos_guidance_range() -> None:
    proposals = _axes(
        propose_sweeps(
            {"epoch": 2, "guidance": 5.0}, {"epoch": EPOCHS, "guidance": [5, 7.5, 10]}, CARD, 10, (1, 2)
        )
    )
    assert proposals == {
        "guidance": ([1, 1.5, 2], "python -m bespoke_exp -m epoch=1,2,...,10 guidance=1,1.5,2"),
    }


def test_a_best_guidance_at_the_lowest_swept_is_extended_down_but_not_out_of_the_models_range() -> None:
    swept = {"epoch": EPOCHS, "guidance": [5, 7.5, 10]}
    inside = _axes(propose_sweeps({"epoch": 2, "guidance": 5.0}, swept, CARD, 10, (3, 12)))
    assert inside["guidance"][0] == [3, 5]  # 2.5 would leave SDXL's 3-12
    free = _axes(propose_sweeps({"epoch": 2, "guidance": 5.0}, swept, CARD, 10, None))
    assert free["guidance"][0] == [1.0, 2.5, 5.0]  # two steps down, not below 1 (no guidance)
    assert _axes(propose_sweeps({"epoch": 2, "guidance": 10.0}, swept, CARD, 10, (3, 12)))["guidance"][0] == [
        10.0,
        12,
    ]
    # In the middle, or at the edge of the model's range: nothing to extend.
    assert propose_sweeps({"epoch": 2, "guidance": 7.5}, swept, CARD, 10, (3, 12)) == []
    assert (
        propose_sweeps(
            {"epoch": 2, "guidance": 1.0}, {"epoch": EPOCHS, "guidance": [1, 1.5, 2]}, [], 10, (1, 2)
        )
        == []
    )


def test_a_best_epoch_at_the_edge_asks_for_the_epochs_the_trainer_saved_and_the_sweep_left_out() -> None:
    swept = {"epoch": [1, 2, 3], "guidance": [1, 1.5, 2]}
    overrides = ["epoch=1,2,3", "guidance=1,1.5,2", "paths.demo=/x"]
    later = _axes(propose_sweeps({"epoch": 3, "guidance": 1.5}, swept, overrides, 10, (1, 2)))
    assert later == {
        "epoch": (
            list(range(3, 11)),
            "python -m bespoke_exp -m guidance=1,1.5,2 paths.demo=/x epoch=3,4,...,10",
        )
    }
    # The trainer made no later epoch: that is a retrain (more_epochs), not a sweep.
    assert propose_sweeps({"epoch": 3, "guidance": 1.5}, swept, overrides, 3, (1, 2)) == []
    earlier = {"epoch": [4, 5, 6], "guidance": [1.5]}
    assert _axes(propose_sweeps({"epoch": 4, "guidance": 1.5}, earlier, [], 10, None))["epoch"][0] == [
        1,
        2,
        3,
        4,
    ]


def test_lora_strength_is_extended_past_its_edge_and_the_trigger_axis_never_is() -> None:
    swept = {"epoch": [1, 2], "guidance": [1.5], "lora_scale": [0.5, 1.0], "trigger": [0.0, 1.0]}
    best = {"epoch": 2, "guidance": 1.5, "lora_scale": 1.0, "trigger": 1.0}
    assert _axes(propose_sweeps(best, swept, [], 2, (1, 2))) == {
        "lora_scale": ([1.0, 1.5, 2.0], "python -m bespoke_exp -m lora_scale=1,1.5,2")
    }


def test_a_sweep_outside_the_models_guidance_range_is_warned_about_naming_the_range() -> None:
    cfg = compose_config(["model=demo"])
    assert guidance_warning(cfg, [1, 1.5, 2]) is None
    warning = guidance_warning(cfg, [1.5, 5, 7.5, 10])
    assert warning.startswith("guidance 5, 7.5, 10 is outside 1-2, the range model=demo follows prompts in")
    assert guidance_warning(compose_config(["model.guidance_range=null"]), [50]) is None
    assert problems_with("model.guidance_range=[2,1]") == [
        "model.guidance_range=[2.0, 1.0] must be null or [low, high] with 0 < low <= high"
    ]
