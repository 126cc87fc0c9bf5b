"""A file's sha256, streamed once and remembered by (path, size, mtime) in this process and in the
user cache, so a sweep (or `python -m bespoke_exp.checkpoints`) doesn't rehash a 218 MB
checkpoint for every job."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha_cache_file() -> Path:
    """Where digests outlive the process: the user cache (XDG_CACHE_HOME), beside the demo build."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "bespoke_exp" / "sha256.json"


def _load_sha_cache() -> dict[str, list]:
    try:
        data = json.loads(sha_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_sha(cache: dict[str, list], resolved: str, stamp: list[int], digest: str) -> None:
    """Record one digest in the cache as read; entries of files that no longer exist are
    dropped, so it stays as small as the checkpoints on disk. A cache that can't be written
    only costs a rehash."""
    entries = {p: e for p, e in cache.items() if Path(p).exists()}
    entries[resolved] = [*stamp, digest]
    target = sha_cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entries))
        os.replace(temporary, target)  # atomic: a concurrent reader sees the old or the new file
    except OSError:
        pass


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, streamed; cached by (path, size, mtime) in this process and on
    disk, so a sweep (or `inspect`) doesn't rehash a 218 MB checkpoint for every job."""
    stat = path.stat()
    resolved = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns]
    key = (resolved, *stamp)
    if key not in _SHA_CACHE:
        cache = _load_sha_cache()
        entry = cache.get(resolved)
        if isinstance(entry, list) and entry[:2] == stamp and len(entry) == 3:
            _SHA_CACHE[key] = str(entry[2])
        else:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _SHA_CACHE[key] = digest.hexdigest()
            _store_sha(cache, resolved, stamp, _SHA_CACHE[key])
    return _SHA_CACHE[key]
