"""Resume: a job's earlier attempts at the exact same work (config fingerprint + checkpoint
sha256). A FINISHED one is reused instead of re-run; a crashed or killed one may have
left intact images behind, which are reused instead of regenerated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from bespoke_exp import tracking
from bespoke_exp.generate import image_store


def earlier_attempts(tracker: tracking.Tracker, identity: Mapping[str, str]) -> tuple[str | None, list]:
    """(newest FINISHED run id with this identity or None, the unfinished attempts newest first)."""
    attempts = tracking.find_job_runs(tracker, identity)
    finished = [run.info.run_id for run in attempts if run.info.status == "FINISHED"]
    unfinished = [run for run in attempts if run.info.status != "FINISHED"]
    return (finished[0] if finished else None), unfinished


def earlier_images(
    unfinished: Sequence, identity: Mapping[str, str], names: Sequence[str], prefix: str
) -> dict[str, Image.Image] | None:
    """Images a crashed or killed attempt at this exact job left on disk, if intact."""
    for run in unfinished:
        if "output_dir" not in run.data.tags:
            continue
        images, reason = image_store.load_intact(
            Path(run.data.tags["output_dir"]) / "images", identity, names
        )
        verdict = "reusing images" if images else "regenerating"
        print(
            f"{prefix} earlier attempt {run.info.run_id} ({run.info.status}): {verdict}: {reason}", flush=True
        )
        if images:
            return images
    return None
