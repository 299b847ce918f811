"""Making a file or a directory entry durable: the one fsync helper of the journal's files."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_path"]


def fsync_path(path: str | os.PathLike[str] | Path) -> None:
    """fsync ``path``: a file's contents, or a directory's entries (after a create, a
    rename or an unlink in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
