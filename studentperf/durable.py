"""Making a file's or a folder's contents survive a crash (fsync by path)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsyncs a file, or a folder (so the names of the files created in it persist)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
