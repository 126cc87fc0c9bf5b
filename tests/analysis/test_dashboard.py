"""The sweep's dashboard on its parent run, read back through MlflowClient: epoch curves as
metric histories, an epoch slider of picture + recovered grid per prompt and seed, the per-image
table, and no duplicate points when the report is logged again."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from bespoke_exp import analysis, rank, tracking
from bespoke_exp.analysis.dashboard import TABLE_FILE
from bespoke_exp.config import compose_config
from bespoke_exp.config.schema import AnalysisConfig

EPOCHS, GUIDANCES, PROMPTS, SEEDS = (1, 2, 3), (5.0, 7.5), ("basic", "advanced"), (0, 1)
PX = 240  # 10 px per cell
COMPONENTS = {"adherence/pass_rate": 0.5, "grid/purity": 0.8, "palette/off_palette_rate": 0.1}


def _art(epoch: int, guidance: float, prompt: str, seed: int) -> np.ndarray:
    """A distinct 24x24 grid per image, a few flat colours."""
    rng = np.random.default_rng([epoch, int(guidance * 2), PROMPTS.index(prompt), seed])
    palette = rng.integers(0, 256, (5, 3))
    return palette[rng.integers(0, 5, (24, 24))].astype(np.uint8)


def _picture(epoch: int, guidance: float, prompt: str, seed: int) -> Image.Image:
    """The art at 10 px per cell with pixel noise, as a sampler draws it: no cell is flat."""
    cells = np.kron(_art(epoch, guidance, prompt, seed), np.ones((10, 10, 1), np.uint8)).astype(int)
    noise = np.random.default_rng(seed).integers(-6, 7, cells.shape)
    return Image.fromarray(np.clip(cells + noise, 0, 255).astype(np.uint8))


def _score(epoch: int, guidance: float, prompt: str, seed: int) -> float:
    return 0.3 + 0.1 * epoch + 0.02 * guidance + 0.01 * PROMPTS.index(prompt) + 0.005 * seed


def _job(tracker, parent: str, epoch: int, guidance: float, tmp_path) -> None:
    """A FINISHED job run as a sweep job logs it: tags, per-image table, images, aggregates."""
    run = tracking.start_run(
        tracker,
        f"epoch={epoch:02d} guidance={guidance:g}",
        parent_run_id=parent,
        params={"metrics.cells": "24", "checkpoint.epochs": "3"},
        tags={tracking.TAG_ROLE: "job", "epoch": str(epoch), "guidance": f"{guidance:g}"},
    )
    rows, folder = [], tmp_path / run
    folder.mkdir()
    for prompt in PROMPTS:
        for seed in SEEDS:
            _picture(epoch, guidance, prompt, seed).save(folder / f"{prompt}_seed{seed}.png")
            metrics = {k: v + 0.01 * epoch for k, v in COMPONENTS.items()}
            rows.append(
                {
                    "prompt_id": prompt,
                    "split": "train",
                    "seed": seed,
                    "score": _score(epoch, guidance, prompt, seed),
                }
                | metrics
            )
    tracking.log_artifacts(tracker, run, folder, "images")
    tracking.log_table(tracker, run, rows, "metrics/per_image.json")
    tracking.log_metrics(
        tracker, run, {k: v + 0.01 * epoch + 0.001 * guidance for k, v in COMPONENTS.items()}
    )
    tracking.finish_run(tracker, run)


@pytest.fixture()
def sweep(tracking_uri, tmp_path) -> analysis.Sweep:
    tracker = tracking.connect(tracking_uri, "dash")
    parent = tracking.start_run(
        tracker, "sweep s-dash", tags={tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP_ID: "s-dash"}
    )
    for epoch in EPOCHS:
        for guidance in GUIDANCES:
            _job(tracker, parent, epoch, guidance, tmp_path)
    return analysis.load_sweep(parent, tracking_uri=tracking_uri, experiment="dash")


def _histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("epoch_")]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _frames(client: MlflowClient, run_id: str) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png"))


def test_the_parent_holds_one_point_per_epoch_for_every_curve(sweep, tmp_path):
    rec = analysis.report_sweep(sweep, AnalysisConfig(n_boot=100), out_dir=tmp_path / "report")
    histories = _histories(sweep.tracker.client, sweep.parent_run_id)
    curves = ("mean", "ci_low", "ci_high", *(f"g{g:g}" for g in GUIDANCES))  # one per guidance too
    expected = {f"epoch_score/{s}" for s in curves} | {f"epoch_{m}" for m in COMPONENTS}
    assert set(histories) == expected
    for key, points in histories.items():
        assert [step for step, _ in points] == list(EPOCHS), key
    # The values are the sweep's own numbers, not just any numbers at the right steps.
    for epoch, value in histories["epoch_score/g7.5"]:
        cell = [_score(epoch, 7.5, p, s) for p in PROMPTS for s in SEEDS]
        assert value == pytest.approx(np.mean(cell))
    for epoch, value in histories["epoch_grid/purity"]:
        assert value == pytest.approx(0.8 + 0.01 * epoch + 0.001 * np.mean(GUIDANCES))
    for (_, low), (_, mean), (_, high) in zip(
        histories["epoch_score/ci_low"], histories["epoch_score/mean"], histories["epoch_score/ci_high"]
    ):
        assert low <= mean <= high
    assert [row["epoch"] for row in rec.by_epoch] == list(EPOCHS)


def test_each_prompt_and_seed_gets_a_frame_per_epoch_with_its_recovered_grid(sweep, tmp_path):
    rec = analysis.report_sweep(sweep, AnalysisConfig(n_boot=100), out_dir=tmp_path / "report")
    best = float(rec.best["guidance"])
    client = sweep.tracker.client
    frames = _frames(client, sweep.parent_run_id)
    logged = tracking.logged_image_steps(sweep.tracker, sweep.parent_run_id)
    assert len(frames) == len(logged) == len(EPOCHS) * len(PROMPTS) * len(SEEDS)
    assert logged == {(f"{p}_seed{s}_g{best:g}", e) for p in PROMPTS for s in SEEDS for e in EPOCHS}
    # One frame: the picture at the left, the grid recovered from it at the right, same size.
    frame_path = next(f for f in frames if f.startswith(f"images/advanced_seed1_g{best:g}+step+2+"))
    with Image.open(client.download_artifacts(sweep.parent_run_id, frame_path, str(tmp_path))) as frame:
        pixels = np.asarray(frame.convert("RGB"))
    assert pixels.shape == (PX, 2 * PX + 8, 3)
    truth = _art(2, best, "advanced", 1).astype(int)
    picture, grid = pixels[:, :PX], pixels[:, -PX:]
    assert (picture == np.asarray(_picture(2, best, "advanced", 1))).all()
    # The grid is flat per cell (the picture is not) and has the art's colours.
    assert (grid == np.kron(grid[::10, ::10], np.ones((10, 10, 1), np.uint8))).all()
    assert np.abs(grid[::10, ::10].astype(int) - truth).max() <= 3


def test_the_table_has_one_row_per_generated_image(sweep, tmp_path):
    analysis.report_sweep(sweep, AnalysisConfig(n_boot=100), out_dir=tmp_path / "report")
    rows = pd.DataFrame(tracking.load_table(sweep.tracker, sweep.parent_run_id, TABLE_FILE))
    assert len(rows) == len(sweep.images) == len(EPOCHS) * len(GUIDANCES) * len(PROMPTS) * len(SEEDS)
    assert {"epoch", "guidance", "prompt_id", "seed", "split", "score", "image", *COMPONENTS} <= set(rows)
    assert not rows.duplicated(["epoch", "guidance", "prompt_id", "seed"]).any()
    row = rows[(rows["epoch"] == 3) & (rows["guidance"] == 5.0) & (rows["prompt_id"] == "basic")].iloc[0]
    assert row["score"] == pytest.approx(_score(3, 5.0, "basic", int(row["seed"])))
    run_id, path = row["image"].removeprefix("runs:/").split("/", 1)
    with Image.open(sweep.tracker.client.download_artifacts(run_id, path, str(tmp_path))) as image:
        picture = np.asarray(image.convert("RGB"))
    assert (picture == np.asarray(_picture(3, 5.0, "basic", int(row["seed"])))).all()


def test_logging_the_report_again_adds_no_duplicate_points_frames_or_rows(sweep, tmp_path):
    analysis.report_sweep(sweep, AnalysisConfig(n_boot=100), out_dir=tmp_path / "first")
    client = sweep.tracker.client
    before = (_histories(client, sweep.parent_run_id), _frames(client, sweep.parent_run_id))
    # Another bootstrap size moves the intervals: the existing points still win, none is appended.
    analysis.report_sweep(sweep, AnalysisConfig(n_boot=120), out_dir=tmp_path / "second")
    after = (_histories(client, sweep.parent_run_id), _frames(client, sweep.parent_run_id))
    assert after == before
    rows = tracking.load_table(sweep.tracker, sweep.parent_run_id, TABLE_FILE)
    assert len(rows) == len(sweep.images)


def _mlflow_ui_routes() -> tuple[str, str]:
    """(the run page's route with a tab, the model-metrics tab's name) in the MLflow UI this
    environment serves (`mlflow ui` is a single-page app with hash routes: /#/<route>)."""
    bundles = sorted(
        (Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js").glob("main.*.js")
    )
    if not bundles:
        pytest.skip("this mlflow install has no UI bundle to read the routes from")
    code = bundles[0].read_text(errors="replace")
    route = re.search(r'runPageWithTab\(\)\{return\(0,\w+\.\w+\)\("([^"]+)"\)', code)
    tab = re.search(r'MODEL_METRIC_CHARTS="([^"]+)"', code)
    assert route and tab and "createHashRouter" in code, "the MLflow UI bundle changed shape"
    return route.group(1), tab.group(1)


def test_the_dashboard_link_opens_the_parent_runs_metric_charts(tracking_uri):
    tracker = tracking.connect(tracking_uri, "dash")
    route, tab = _mlflow_ui_routes()  # "/experiments/:experimentId/runs/:runUuid/*", "model-metrics"
    url = tracking.run_ui_url(tracker, "abc123")
    server, path = url.split("/#", 1)
    assert server == "http://127.0.0.1:5000"  # where `mlflow ui` listens by default
    expected = route.replace(":experimentId", tracker.experiment_id).replace(":runUuid", "abc123")
    assert path == expected.replace("*", tab)


@pytest.mark.slow
def test_a_demo_sweep_and_rank_log_leave_one_point_per_epoch(tmp_path, demo_dir):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    sweep_cmd = [
        *(sys.executable, "-m", "bespoke_exp", "-m", f"paths.demo={demo_dir}", f"tracking.uri={uri}"),
        *("tracking.experiment=dash", f"hydra.sweep.dir={tmp_path / 'sweep'}", "prompts=seed_tests"),
        *("sampler.steps=2", "sampler.seeds=[0]", "sampler.width=192", "sampler.height=192"),
        *("epoch=1,2,3", "guidance=5,7.5"),
    ]
    done = subprocess.run(sweep_cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("dash")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`bespoke.role` = 'sweep'")
    run_id = parent.info.run_id
    assert f"/#/experiments/{experiment.experiment_id}/runs/{run_id}/model-metrics" in done.stdout
    histories = _histories(client, run_id)
    assert {"epoch_score/mean", "epoch_score/g5", "epoch_score/g7.5", "epoch_adherence/pass_rate"} <= set(
        histories
    )
    assert all([s for s, _ in points] == [1, 2, 3] for points in histories.values()), histories
    frames = _frames(client, run_id)
    prompts = len(compose_config(["prompts=seed_tests"]).prompts["items"])  # one seed each
    assert len(frames) == 3 * prompts
    rows = tracking.load_table(tracking.connect(uri, "dash"), run_id, TABLE_FILE)
    assert len(rows) == 6 * prompts

    assert rank.main(["--tracking-uri", uri, "--sweep", run_id, "--log"]) == 0
    assert _histories(client, run_id) == histories
    assert _frames(client, run_id) == frames
    assert len(tracking.load_table(tracking.connect(uri, "dash"), run_id, TABLE_FILE)) == 6 * prompts
