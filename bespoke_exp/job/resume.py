"""What earlier work a job can stand on, decided once (`decide_reuse`) from the job's earlier
attempts at the same images (generation identity + checkpoint sha256):

- a FINISHED one with the same scoring identity: the job is done, its run is reused;
- a FINISHED one scored otherwise (a metric setting or the scoring code changed): its images
  are scored anew, nothing is generated;
- a crashed or killed one that left its images intact on disk (its manifest vouches for them):
  they are reused instead of regenerated;
- otherwise, or with `force=true`: generate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bespoke_exp import tracking
from bespoke_exp.generate import image_store
from bespoke_exp.job.identity import TAG_SCORING


@dataclass(frozen=True)
class Reuse:
    """A job's decision about earlier work. `identity` (generation identity and checkpoint
    sha256, as tags) finds the earlier attempts and vouches for images on disk."""

    identity: dict[str, str]
    done_by: str | None = None  # an identical FINISHED run: nothing to do
    images_of: str | None = None  # a FINISHED run of the same images, scored otherwise
    crashed: list = field(default_factory=list)  # unfinished attempts, newest first

    def tags(self) -> dict[str, str]:
        """What the job's run records about it: its identity, and whose images it scores."""
        return {**self.identity, **({"images_from": self.images_of} if self.images_of else {})}

    def earlier_images(
        self, tracker: tracking.Tracker, names: Sequence[str], prefix: str
    ) -> dict[str, Image.Image] | None:
        """name -> image, from the FINISHED run of the same images or a crashed attempt's intact
        files; None when the job must generate them."""
        if self.images_of:
            print(f"{prefix} scoring the images of run {self.images_of} (same generation, other scoring)")
            return finished_images(tracker, self.images_of, names)
        return _intact_images(self.crashed, self.identity, names, prefix)


def decide_reuse(
    tracker: tracking.Tracker, identity: Mapping[str, str], scoring: str, *, force: bool
) -> Reuse:
    """The job's `Reuse`, from its earlier attempts (any status) in the experiment."""
    attempts = tracking.find_job_runs(tracker, identity)
    finished = [run for run in attempts if run.info.status == "FINISHED"]
    crashed = [run for run in attempts if run.info.status != "FINISHED"]
    if force:
        return Reuse(dict(identity), crashed=crashed)
    same_scores = [run.info.run_id for run in finished if run.data.tags.get(TAG_SCORING) == scoring]
    return Reuse(
        dict(identity),
        done_by=same_scores[0] if same_scores else None,
        images_of=finished[0].info.run_id if finished else None,
        crashed=crashed,
    )


def _intact_images(
    crashed: Sequence, identity: Mapping[str, str], names: Sequence[str], prefix: str
) -> dict[str, Image.Image] | None:
    """Images a crashed or killed attempt at this exact job left on disk, if intact."""
    for run in crashed:
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
