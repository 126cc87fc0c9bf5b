"""The real CLI as a subprocess: Hydra's launcher, the callback, a real MLflow store."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bespoke_exp import rank, tracking
from tests.helpers import STEM, my_lora_folder, small_sweep_command, sqlite_uri

pytestmark = pytest.mark.slow


def _command(tmp_path, demo_dir, *overrides, sweep_dir="sweep"):
    return small_sweep_command(
        demo_dir,
        f"tracking.uri={sqlite_uri(tmp_path)}",
        "tracking.experiment=sweep",
        f"hydra.sweep.dir={tmp_path / sweep_dir}",
        "sampler.seeds=[0,1]",
        *overrides,
    )


def _runs(tmp_path):
    client = MlflowClient(sqlite_uri(tmp_path))
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if r.data.tags.get("bespoke.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("bespoke.role") == "job"]
    return client, parents, children


def _sweep(tmp_path, demo_dir, *overrides):
    done = subprocess.run(
        _command(tmp_path, demo_dir, *overrides), capture_output=True, text=True, timeout=600
    )
    return (done, *_runs(tmp_path))


def test_sweep_logs_one_parent_and_a_finished_child_per_job(tmp_path, demo_dir, monkeypatch, capsys):
    # Two sampling steps draw no good art (poor_overall, which never takes @champion): the bar is
    # lowered so the champion's registration is tested too.
    done, client, parents, children = _sweep(
        tmp_path, demo_dir, "epoch=1,2,...,3", "guidance=5,7.5", "analysis.thresholds.poor=0.1"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(children) == 6
    assert {(r.data.tags["epoch"], r.data.tags["guidance"]) for r in children} == {
        (e, g) for e in ("1", "2", "3") for g in ("5", "7.5")
    }
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        assert child.data.params["sampler.seeds"] == "[0, 1]"
        assert len(child.data.tags["checkpoint_sha256"]) == 64
        images = {a.path for a in client.list_artifacts(child.info.run_id, "images")}
        assert len([p for p in images if p.endswith("seed0.png") or p.endswith("seed1.png")]) == 6
    # Paired seeds: one sha per epoch, shared across guidance values.
    shas = {(r.data.tags["epoch"], r.data.tags["checkpoint_sha256"]) for r in children}
    assert len(shas) == 3 and len({sha for _, sha in shas}) == 3
    assert "[job 6/6" in done.stdout
    assert "mlflow ui --backend-store-uri" in done.stdout

    # The analysis ran at the end: report on the parent, next to the sweep, champion registered.
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    expected = {
        "recommendation.json",
        "recommendation.md",
        "ranking.csv",
        "score_by_epoch.png",
        "score_heatmap.png",
        "best_seeds.png",
        "lora_value.png",  # the seed prompts mark `advanced` in-set: it is set beside the other two
        "training_curve.png",  # the demo's trainer log (checkpoint.train_logs) beside the scores
        *(f"comparison_{p}.png" for p in ("basic", "advanced", "accessory")),
    }
    assert report == {f"report/{name}" for name in expected}
    retrain = {a.path for a in client.list_artifacts(parent.info.run_id, "retrain")}
    assert retrain == {"retrain/sd_scripts.toml", "retrain/changes.md"}
    assert {p.name for p in (tmp_path / "sweep" / "report").iterdir()} == expected
    best_run = parent.data.tags["best.run_id"]
    assert best_run in {c.info.run_id for c in children}
    assert parent.data.tags["diagnosis"] and "best/mean" in parent.data.metrics

    capsys.readouterr()
    assert rank.main(["--json", "--tracking-uri", sqlite_uri(tmp_path), "--experiment", "sweep"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parent_run_id"] == parent.info.run_id
    assert result["best"]["run_id"] == best_run
    assert {"epoch", "guidance", "mean", "ci_low", "ci_high", "checkpoint"} <= set(result["best"])
    assert result["best"]["ci_low"] <= result["best"]["mean"] <= result["best"]["ci_high"]
    assert len(result["ranking"]) == 6 and [c["rank"] for c in result["ranking"]] == list(range(1, 7))
    assert result["diagnosis"]["code"] and result["diagnosis"]["sentence"]
    assert "retrain" in result

    best_epoch = result["best"]["epoch"]
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", sqlite_uri(tmp_path)
    )  # models:/ URIs resolve through the registry URI
    downloaded = Path(
        mlflow.artifacts.download_artifacts(f"models:/{STEM}@champion", dst_path=str(tmp_path / "dl"))
    )
    expected_file = demo_dir / "checkpoints" / f"{STEM}-{best_epoch:06d}.safetensors"
    assert [p.name for p in downloaded.rglob("*.safetensors")] == [expected_file.name]
    assert next(downloaded.rglob("*.safetensors")).read_bytes() == expected_file.read_bytes()


def test_missing_epoch_fails_its_job_only_and_the_sweep_exits_non_zero(tmp_path, demo_dir):
    partial = tmp_path / "partial_run"
    partial.mkdir()
    for epoch in (1, 3):
        (partial / f"{STEM}-{epoch:06d}.safetensors").symlink_to(
            demo_dir / "checkpoints" / f"{STEM}-{epoch:06d}.safetensors"
        )
    done, client, parents, children = _sweep(
        tmp_path, demo_dir, "epoch=1,2,3", "guidance=7.5", f"checkpoint.dir={partial}"
    )
    assert done.returncode != 0
    status = {r.data.tags["epoch"]: r.info.status for r in children}
    assert status == {"1": "FINISHED", "2": "FAILED", "3": "FINISHED"}
    failed = next(r for r in children if r.data.tags["epoch"] == "2")
    assert f"{STEM}-000002.safetensors" in failed.data.tags["error"]
    assert "epochs with a file: 1, 3" in failed.data.tags["error"]
    assert parents[0].info.status == "FAILED"
    assert "1 of 3 jobs failed" in done.stderr
    assert parents[0].data.tags["error"] == f"1 of 3 jobs failed; the first: {failed.data.tags['error']}"
    assert not client.search_model_versions(f"name = '{STEM}'")  # a failed sweep registers nothing
    # The jobs that finished are still ranked and reported.
    assert parents[0].data.tags["best.epoch"] in {"1", "3"}
    assert "report/recommendation.json" in {
        a.path for a in client.list_artifacts(parents[0].info.run_id, "report")
    }


def test_killed_sweep_resumes_with_exactly_the_unfinished_jobs(tmp_path, demo_dir):
    axes = ("epoch=1,2,3", "guidance=5,7.5")
    process = subprocess.Popen(
        _command(tmp_path, demo_dir, *axes, sweep_dir="first"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if sum(r.info.status == "FINISHED" for r in _runs(tmp_path)[2]) >= 2:
            break
        time.sleep(1)  # a gentle reader: SQLite writers wait for readers
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    _, parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"], stderr[-4000:]
    assert "RUNNING" not in {c.info.status for c in children}
    done_before = {
        c.info.run_id: (c.data.tags["epoch"], c.data.tags["guidance"])
        for c in children
        if c.info.status == "FINISHED"
    }
    assert 2 <= len(done_before) < 6

    rerun = subprocess.run(
        _command(tmp_path, demo_dir, *axes, sweep_dir="second"), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    client, parents, _ = _runs(tmp_path)
    parent = next(p for p in parents if p.info.status == "FINISHED")
    tracker = tracking.connect(sqlite_uri(tmp_path), "sweep")
    new_children, reused = tracking.sweep_runs(tracker, parent.info.run_id)
    assert {r.info.run_id for r in reused} == set(done_before)
    ran_now = {(c.data.tags["epoch"], c.data.tags["guidance"]) for c in new_children}
    assert ran_now.isdisjoint(done_before.values())
    assert ran_now | set(done_before.values()) == {(e, g) for e in ("1", "2", "3") for g in ("5", "7.5")}
    assert all(c.info.status == "FINISHED" for c in new_children)
    assert f"{len(done_before)} skipped" in rerun.stdout


def test_an_unknown_sampler_option_is_named_with_the_choices(tmp_path, demo_dir):
    done, *_ = _sweep(tmp_path, demo_dir, "epoch=1", "sampler=turbo")
    assert done.returncode != 0
    assert "Could not find 'sampler/turbo'" in done.stderr
    assert "demo" in done.stderr and "sdxl" in done.stderr


def test_an_unusable_tracking_store_stops_the_sweep_naming_the_uri(tmp_path, demo_dir):
    blocker = tmp_path / "file_not_dir"
    blocker.write_text("")
    command = _command(tmp_path, demo_dir, "epoch=1,2") + [f"tracking.uri=sqlite:///{blocker}/mlflow.db"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert (
        f"sweep not started: cannot use MLflow tracking store tracking.uri='sqlite:///{blocker}/mlflow.db'"
        in done.stderr
    )
    assert not (tmp_path / "sweep" / "0").exists()


def test_epoch_all_on_the_command_line_fails_cleanly_without_epochs(tmp_path) -> None:
    command = [sys.executable, "-m", "bespoke_exp", "-m", "epoch=all", *my_lora_folder(tmp_path, [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"checkpoint.dir={tmp_path} holds no epoch files for checkpoint.stem=My_Lora" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_lora_scale_multirun_runs_one_job_per_strength_and_ranks_the_axis(tmp_path, demo_dir):
    command = small_sweep_command(
        demo_dir,
        f"tracking.uri={sqlite_uri(tmp_path)}",
        "tracking.experiment=sweep",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "sampler.seeds=[0]",
        "epoch=1",
        "guidance=1.5",
        "lora_scale=0.5,1.0",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parents, children = _runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    by_scale = {child.data.tags["lora_scale"]: child for child in children}
    assert set(by_scale) == {"0.5", "1"}
    assert all(child.info.status == "FINISHED" for child in children)
    assert by_scale["0.5"].info.run_name == "epoch=01 guidance=1.5 lora_scale=0.5"
    assert by_scale["1"].info.run_name.startswith("epoch=01 guidance=1.5")
    assert by_scale["1"].info.run_name != by_scale["0.5"].info.run_name
    for scale, child in by_scale.items():  # the strength the job applied, as its param says
        assert float(child.data.params["lora_scale"]) == float(scale)
        assert child.data.tags["epoch"] == "1" and child.data.tags["guidance"] == "1.5"
    # One checkpoint at two strengths: two generations, and the strength reached the pixels.
    assert by_scale["0.5"].data.tags["checkpoint_sha256"] == by_scale["1"].data.tags["checkpoint_sha256"]
    pictures = [
        Path(client.download_artifacts(by_scale[s].info.run_id, "images/basic_seed0.png", str(tmp_path / s)))
        for s in ("0.5", "1")
    ]
    assert pictures[0].read_bytes() != pictures[1].read_bytes()
    # The parent's ranking covers the axis: one row per strength, best named on the parent.
    report = Path(client.download_artifacts(parents[0].info.run_id, "report/ranking.csv", str(tmp_path)))
    with report.open() as table:
        ranking = list(csv.DictReader(table))
    assert sorted(float(row["lora_scale"]) for row in ranking) == [0.5, 1.0]
    assert parents[0].data.tags["best.lora_scale"] in by_scale
