"""The one atomic writer: readers see the old file or the new one, and the file mode is the umask's."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline import atomic


@pytest.fixture()
def umask():
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value):
        os.umask(value)

    yield set_umask
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_mode_follows_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = atomic.write_text(tmp_path / "a" / "log.yaml", "x: 1\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_text() == "x: 1\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    path = atomic.write_json(tmp_path / "report.json", {"a": 1})

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # fails after the temporary file was written, before the rename
    with pytest.raises(OSError, match="No space left"):
        atomic.write_json(path, {"a": 2})
    assert path.read_text().strip() == '{\n  "a": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_driver_files_are_readable_by_the_group(synth_project, tmp_path, umask):
    """Markers, parameter logs and reports get the umask's mode, like the picks (not mkstemp's 0600)."""
    from pipeline.cli import main

    umask(0o022)
    assert main(["localize", "-c", str(synth_project), "-sinfo", "targets,data-portal,0", "-np", "1"]) == 0
    overlay = synth_project.parent / "overlay"
    written = [p for p in (overlay / "logs").rglob("*") if p.is_file()] + list((overlay / "tomopick").glob("*"))
    assert any(p.name.endswith(".json") and "done-" in str(p.parent) for p in written)
    assert any(p.name == "throughput.json" for p in written)
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
