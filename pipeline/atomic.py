"""One atomic writer for every file the pipeline writes beside copick's own (logs, markers, reports).

Write aside, then rename: a reader sees the old file or the new one, never half of one, and a crash leaves at
most a hidden ``.NAME.*.tmp`` file. The file is created with ``os.open(..., 0o666)`` so the process umask sets
its mode, as for any other file the user's tools write (``tempfile.mkstemp`` would make it 0600, unreadable to
the colleagues who share a project).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. An OSError names ``path`` (disk full names no file, and the
    temporary file's name means nothing to the user)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        if exc.filename is None or str(exc.filename) == str(tmp):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return path


def write_text_if_changed(path, text: str) -> bool:
    """Write only when the file's content would change (so a job that changed nothing rewrites nothing, and
    can run against a read-only overlay); True when written."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_text(path, text)
    return True


def write_json(path, doc) -> Path:
    return write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
