"""A run's files: images, tables, JSON, text and whole folders logged as artifacts, and read back."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bespoke_exp.tracking.store import Tracker


def log_artifacts(tracker: Tracker, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
    tracker.client.log_artifacts(run_id, str(local_dir), artifact_path)


def log_artifact(tracker: Tracker, run_id: str, local_file: Path, artifact_path: str | None = None) -> None:
    tracker.client.log_artifact(run_id, str(local_file), artifact_path)


def log_image(tracker: Tracker, run_id: str, image, key: str) -> None:
    """Into the run's image view in the UI (not just the artifact tree)."""
    tracker.client.log_image(run_id, image, key=key, step=0)


def log_table(tracker: Tracker, run_id: str, rows: list[dict], artifact_file: str) -> None:
    """A JSON table the UI renders (and `mlflow.load_table` reads back)."""
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        data = {c: [row.get(c) for row in rows] for c in columns}
        tracker.client.log_table(run_id, data=data, artifact_file=artifact_file)


def log_text(tracker: Tracker, run_id: str, text: str, artifact_file: str) -> None:
    tracker.client.log_text(run_id, text, artifact_file)


def set_run_description(tracker: Tracker, run_id: str, markdown: str) -> None:
    """The run page's description box (rendered Markdown)."""
    tracker.client.set_tag(run_id, "mlflow.note.content", markdown)


def list_artifacts(tracker: Tracker, run_id: str, folder: str) -> list[str]:
    """Paths of the files directly in a run's artifact `folder`."""
    return [a.path for a in tracker.client.list_artifacts(run_id, folder) if not a.is_dir]


def log_dict(tracker: Tracker, run_id: str, data: dict, artifact_file: str) -> None:
    tracker.client.log_dict(run_id, data, artifact_file)


def load_dict(tracker: Tracker, run_id: str, artifact_file: str) -> dict | None:
    """A JSON artifact written by `log_dict`, or None when the run has none."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.client.download_artifacts(run_id, artifact_file, tmp)
        except Exception:  # MLflow raises several types for a missing artifact
            return None
        return json.loads(Path(path).read_text())


def load_table(tracker: Tracker, run_id: str, artifact_file: str) -> list[dict]:
    """Rows of a table written by `log_table`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.client.download_artifacts(run_id, artifact_file, tmp)
        table = json.loads(Path(path).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def download_artifact(tracker: Tracker, run_id: str, artifact_path: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return Path(tracker.client.download_artifacts(run_id, artifact_path, str(destination)))
