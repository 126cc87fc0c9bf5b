"""Step-wise histories, step images and replaceable tables: the sweep's dashboard in the MLflow UI.
MLflow can't delete metric points or images, so re-logging a sweep's dashboard (`rank --log`) must
write only what is not there yet: these writers skip every (key, step) already present."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from bespoke_exp.tracking.artifacts import list_artifacts, log_table
from bespoke_exp.tracking.store import Tracker, log_points


def run_ui_url(tracker: Tracker, run_id: str, port: int = 5000, tab: str = "model-metrics") -> str:
    """A run's page in `mlflow ui`; the "model-metrics" tab draws its metric histories and step images
    (route `/experiments/:experimentId/runs/:runUuid/:tab` in the 3.17 UI)."""
    return f"http://127.0.0.1:{port}/#/experiments/{tracker.experiment_id}/runs/{run_id}/{tab}"


def metric_steps(tracker: Tracker, run_id: str, key: str) -> set[int]:
    """The steps of `key` already logged on the run (empty when it has none)."""
    return {m.step for m in tracker.client.get_metric_history(run_id, key)}


def log_new_metric_steps(tracker: Tracker, run_id: str, histories: Mapping[str, Mapping[int, float]]) -> int:
    """Log `key -> {step: value}` histories, leaving out every (key, step) the run already has, in
    batches; returns the number of points written."""
    items = []
    for key, points in histories.items():
        done = metric_steps(tracker, run_id, key)
        items += [(key, v, int(s)) for s, v in sorted(points.items()) if int(s) not in done]
    log_points(tracker, run_id, items)
    return len(items)


def logged_image_steps(tracker: Tracker, run_id: str) -> set[tuple[str, int]]:
    """(key, step) of every step image on the run. MLflow 3.17 stores one as
    `images/<key, '/' as '~'>+step+<step>+timestamp+<ms>+<uuid>.png` (plus a `+compressed.webp`)."""
    found = set()
    for path in list_artifacts(tracker, run_id, "images"):
        name = path.rsplit("/", 1)[-1]
        parts = name.split("+")
        if len(parts) >= 4 and parts[1] == "step" and parts[2].lstrip("-").isdigit():
            found.add((parts[0].replace("~", "/"), int(parts[2])))
    return found


def log_step_image(tracker: Tracker, run_id: str, image, key: str, step: int) -> None:
    """One frame of the UI's image card for `key`: its slider moves through the steps."""
    tracker.client.log_image(run_id, image, key=key, step=int(step))


def replace_table(tracker: Tracker, run_id: str, rows: list[dict], artifact_file: str) -> None:
    """Like `log_table`, but a second call replaces the table instead of appending to it (MLflow's
    `log_table` appends to an existing file): the file is rewritten in the same JSON form."""
    folder, _, name = artifact_file.rpartition("/")
    if name not in {p.rsplit("/", 1)[-1] for p in list_artifacts(tracker, run_id, folder or None)}:
        log_table(tracker, run_id, rows, artifact_file)
        return
    import pandas as pd  # what MLflow writes tables with; only needed on this path

    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = pd.DataFrame({c: [row.get(c) for row in rows] for c in columns})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        table.to_json(path, orient="split", index=False, date_format="iso")
        tracker.client.log_artifact(run_id, str(path), folder or None)
