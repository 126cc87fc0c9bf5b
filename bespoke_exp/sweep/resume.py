"""Resume: a job's earlier attempts at the same generation (generation fingerprint +
checkpoint sha256). A FINISHED one with the same scoring identity is reused instead of
re-run; a FINISHED one scored differently lends its images, which are then scored anew;
a crashed or killed one may have left intact images behind, which are reused instead of
regenerated."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from bespoke_exp import tracking
from bespoke_exp.generate import image_store


def earlier_attempts(tracker: tracking.Tracker, identity: Mapping[str, str]) -> tuple[list, list]:
    """(FINISHED runs of this generation, the unfinished attempts), each newest first."""
    attempts = tracking.find_job_runs(tracker, identity)
    finished = [run for run in attempts if run.info.status == "FINISHED"]
    return finished, [run for run in attempts if run.info.status != "FINISHED"]


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


def finished_images(tracker: tracking.Tracker, run_id: str, names: Sequence[str]) -> dict[str, Image.Image]:
    """The images a FINISHED run logged, read back from the tracking store."""
    images = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = tracking.download_artifact(tracker, run_id, f"images/{name}", Path(tmp))
            with Image.open(path) as image:
                images[name] = image.convert("RGB")
    return images
