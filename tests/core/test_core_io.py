"""Atomic writes and checksums."""

from __future__ import annotations

import hashlib
import os

import pytest

from worldflux.core import io


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    io.atomic_write_bytes(target, b"first")
    io.atomic_write_text(target, "second ✓")
    assert target.read_text(encoding="utf-8") == "second ✓"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "data.bin"
    io.atomic_write_bytes(target, b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert io.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from worldflux.core.io import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
