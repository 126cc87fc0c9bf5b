"""A job's fingerprint: what decides its work, not where things are stored or whether it was forced."""

from __future__ import annotations

from bespoke_exp.config import compose_config, job_fingerprint


def test_fingerprint_ignores_machine_paths_and_force_but_not_settings(tmp_path):
    base = job_fingerprint(compose_config(["paths.demo=/one/place"]))
    assert job_fingerprint(compose_config(["paths.demo=/another/place", "paths.root=/elsewhere"])) == base
    assert job_fingerprint(compose_config(["paths.demo=/one/place", "force=true"])) == base
    assert job_fingerprint(compose_config(["paths.demo=/one/place", "checkpoint.dir=/moved"])) == base
    assert job_fingerprint(compose_config(["paths.demo=/one/place", "sampler.steps=9"])) != base
    assert job_fingerprint(compose_config(["paths.demo=/one/place", "guidance=5"])) != base
