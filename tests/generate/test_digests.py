"""A checkpoint's sha256, cached on disk by path, size and mtime."""

from __future__ import annotations

import hashlib
import json
import os

from bespoke_exp.generate import digests
from bespoke_exp.generate.digests import file_sha256


def test_sha256_is_cached_on_disk_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "_SHA_CACHE", {})  # as a new process would start
    path = tmp_path / "a.safetensors"
    path.write_bytes(b"first content")
    first = file_sha256(path)
    assert (
        json.loads((tmp_path / "cache" / "bespoke_exp" / "sha256.json").read_text())[str(path.resolve())][2]
        == first
    )
    stat = path.stat()
    path.write_bytes(b"other content")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(digests, "_SHA_CACHE", {})
    assert file_sha256(path) == first  # size and mtime unchanged: the disk cache answers, no rehash
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_sha256(path) == hashlib.sha256(b"other content").hexdigest()
