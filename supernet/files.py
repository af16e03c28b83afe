"""The one atomic file writer: a file that must never be half-written (a LUT, results, a checkpoint, a
predictor, an exported model, a report, a pipeline's state) goes through :func:`atomic_write`.

It lives in ``supernet`` because every package may import ``supernet`` and ``supernet`` imports none of
ours; ``agents`` (which imports nothing of ours) keeps its own download-to-``.part`` renames.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write"]


def atomic_write(
    path: str | os.PathLike[str], data: str | bytes | Callable[[IO[bytes]], object], *, make_parents: bool = False
) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    ``data`` is text (UTF-8, newlines as given), bytes, or a function that writes to a binary file object
    (e.g. ``lambda fh: torch.save(obj, fh)``). The file is written next to ``path`` under a temporary name
    with the existing file's permissions (else ``0o666`` less the umask), flushed to disk, renamed over
    ``path`` with ``os.replace`` and the folder synced (``make_parents``: create the folder first). On any
    failure the temporary file is removed and the exception (``OSError`` for the file system) propagates;
    callers turn it into their own package's error naming the path.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if make_parents:
        folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, str):
                fh.write(data.encode("utf-8"))
            elif isinstance(data, bytes | bytearray | memoryview):
                fh.write(data)
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return path


def _file_mode(path: Path) -> int:
    """The existing file's permissions, else 0o666 less the umask (``mkstemp`` alone gives 0o600)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
