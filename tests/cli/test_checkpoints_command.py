"""`python -m bespoke_exp.checkpoints`: what a folder of LoRA files holds, as a table or JSON, and
one line with exit code 2 for a path without checkpoints."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bespoke_exp.checkpoints import main as inspect_main
from tests.helpers import STEM, write_kohya_run, write_lora


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    return write_kohya_run(tmp_path / "run")


def test_inspect_json_is_one_object_with_the_full_settings(run_dir, capsys):
    assert inspect_main([str(run_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["epoch"] for c in data["checkpoints"]] == [1, 2, 4, 5]
    first = data["checkpoints"][0]
    assert first["family"] == "sdxl" and first["rank"] == 4 and first["alpha"] == 2.0
    assert first["sha256"] == hashlib.sha256((run_dir / "Run-000001.safetensors").read_bytes()).hexdigest()
    assert first["training"]["lr_scheduler"] == "cosine_with_restarts"
    assert data["warnings"] == ["Run: no file for epoch 3 (of 1..5)"]


@pytest.mark.parametrize("case", ["missing", "empty", "only_pickles"])
def test_inspect_exits_2_with_one_line_for_a_path_without_checkpoints(tmp_path, capsys, case):
    target = tmp_path / "nothing_here"
    if case != "missing":
        target.mkdir()
    if case == "only_pickles":
        (target / "Run.ckpt").write_bytes(b"x")
    assert inspect_main([str(target)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(target) in error
    assert ("does not exist" if case == "missing" else "holds no .safetensors files") in error


def test_python_m_bespoke_exp_inspect_runs(run_dir):
    done = subprocess.run(
        [sys.executable, "-m", "bespoke_exp.checkpoints", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Run-000004.safetensors" in done.stdout and "no file for epoch 3" in done.stdout


def test_a_header_nested_deeper_than_python_recurses_is_kept_as_text(tmp_path, capsys) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    path = tmp_path / f"{STEM}.safetensors"
    write_lora(
        path, ["lora_unet_a"], rank=4, alpha=None, metadata={"ss_tag_frequency": deep, "ss_network_dim": "4"}
    )
    assert inspect_main([str(path)]) == 0
    assert inspect_main([str(path), "--json"]) == 0
    table, described = capsys.readouterr().out.split("\n{", 1)
    assert json.loads("{" + described)["checkpoints"][0]["rank"] == 4
