"""core.storage's streaming writer: whole files or nothing, like atomic_write."""

from __future__ import annotations

import errno

import pytest

from core import storage
from core.errors import LogitscopeError


def test_atomic_file_writes_the_whole_file_in_pieces(tmp_path):
    target = tmp_path / "sub" / "bundle.zip"
    with storage.atomic_file(target) as f:
        for i in range(5):
            f.write(bytes([i]) * 1000)
    assert target.read_bytes() == b"".join(bytes([i]) * 1000 for i in range(5))
    assert [p.name for p in target.parent.iterdir()] == ["bundle.zip"]


def test_an_error_in_the_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "bundle.zip"
    target.write_bytes(b"old")
    with pytest.raises(ConnectionResetError):
        with storage.atomic_file(target) as f:
            f.write(b"half of the new")
            raise ConnectionResetError("the download broke")  # propagates as it is, not as a disk error
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.zip"]


def test_a_full_disk_is_a_clear_message_and_the_old_file_stays(tmp_path, monkeypatch):
    target = tmp_path / "bundle.zip"
    target.write_bytes(b"old")

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(LogitscopeError, match="full"):
        with storage.atomic_file(target) as f:
            monkeypatch.setattr(f, "_f", Full())
            f.write(b"x" * 10)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.zip"]


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_the_umask_gives_new_files(tmp_path, mask, mode):
    import os

    old = os.umask(mask)
    try:
        storage.atomic_write(tmp_path / "entry.safetensors", b"x")
        with storage.atomic_file(tmp_path / "report.json") as f:
            f.write(b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "entry.safetensors").stat().st_mode & 0o777 == mode
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == mode
