"""A job's sweep axes: `lora_scale` is a top-level axis (the old `checkpoint.lora_scale` spelling
still works), in the job's params, fingerprint and run name."""

from __future__ import annotations

from bespoke_exp.config import compose_config, job_fingerprint
from bespoke_exp.job.run import axis_values, job_name, job_params


def test_lora_scale_is_a_top_level_axis_and_the_old_spelling_still_works() -> None:
    for overrides, scale in ((["lora_scale=0.8"], 0.8), (["checkpoint.lora_scale=0.7"], 0.7), ([], 1.0)):
        cfg = compose_config(["epoch=3", *overrides])
        assert axis_values(cfg) == {"epoch": 3, "guidance": 7.5, "lora_scale": scale, "trigger": 1.0}
    # Both spellings of one strength are one job (same fingerprint), another strength another.
    print_ = {
        o: job_fingerprint(compose_config([o])) for o in ("lora_scale=0.8", "checkpoint.lora_scale=0.8")
    }
    assert len(set(print_.values())) == 1
    assert job_fingerprint(compose_config([])) != print_["lora_scale=0.8"]
    # The param says the strength applied, whichever spelling set it.
    assert job_params(compose_config(["checkpoint.lora_scale=0.7"]))["lora_scale"] == "0.7"
    assert job_params(compose_config(["lora_scale=0.8"]))["checkpoint.lora_scale"] == "0.8"
    assert job_name(compose_config(["epoch=3", "guidance=7.5"])) == "epoch=03 guidance=7.5"
    assert job_name(compose_config(["epoch=3", "lora_scale=0.8"])) == "epoch=03 guidance=7.5 lora_scale=0.8"
