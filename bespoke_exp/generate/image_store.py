"""Generated images on disk, with a manifest that makes them reusable.

A job writes its PNGs first and `manifest.json` last, naming the job's identity (config
fingerprint + checkpoint sha256) and each file's sha256. If the job then dies (logging
failed, Ctrl-C, a kill), the next attempt at the same job reuses the images instead of
spending GPU time again, but only when the manifest vouches for every file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

MANIFEST = "manifest.json"


def image_file_name(prompt_id: str, seed: int) -> str:
    """A generated image's file name, in the job's `images/` folder and its run's artifacts."""
    return f"{prompt_id}_seed{seed}.png"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(images_dir: Path, identity: Mapping[str, str], names: Sequence[str]) -> Path:
    """Record that `names` in `images_dir` are the complete output of the job `identity`."""
    manifest = {"identity": dict(identity), "images": {name: _sha256(images_dir / name) for name in names}}
    path = images_dir / MANIFEST
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(manifest, indent=2))
    staging.replace(path)  # atomic: a manifest is either complete or absent
    return path


def load_intact(
    images_dir: Path, identity: Mapping[str, str], names: Sequence[str]
) -> tuple[dict[str, Image.Image] | None, str]:
    """The images an earlier attempt left in `images_dir`, or None and the reason they
    can't be reused."""
    path = images_dir / MANIFEST
    if not path.is_file():
        return None, f"{images_dir} has no {MANIFEST}: that attempt stopped before its images were complete"
    manifest = json.loads(path.read_text())
    if manifest.get("identity") != dict(identity):
        return None, f"{path} belongs to other work ({manifest.get('identity')})"
    recorded = manifest.get("images", {})
    images = {}
    for name in names:
        file = images_dir / name
        if name not in recorded:
            return None, f"{path} does not list {name}"
        if not file.is_file():
            return None, f"{file} is missing"
        if _sha256(file) != recorded[name]:
            return None, f"{file} changed since it was generated (sha256 differs from {MANIFEST})"
        with Image.open(file) as image:
            images[name] = image.convert("RGB")
    return images, f"all {len(images)} images intact in {images_dir}"
