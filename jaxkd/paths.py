"""The paths a user gives a command to write into, checked in one place before any work starts.

Each check raises :class:`PathError` (a ValueError of jaxkd's: one ``error:`` line, exit 2) naming the flag, the
path and the fix: an empty path, a file where a folder is wanted (or the reverse), and a place that cannot be
written — a read-only file system or a folder without write permission, found on the nearest folder that exists
(nothing is created by the check). Whether a path that must exist does exist stays with the command that reads it:
its message knows what the file should hold.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from jaxkd.errors import JaxkdError

__all__ = ["PathError", "output_dir", "output_file", "unwritable_reason"]


class PathError(JaxkdError, ValueError):
    """A path given on the command line that the command cannot use."""


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def unwritable_reason(path: str | os.PathLike) -> str | None:
    """Why nothing can be created or written at `path` (checked on the nearest existing folder), or None."""
    probe = _nearest_existing(Path(path).absolute())
    if probe.exists() and not probe.is_dir():
        probe = probe.parent
    try:  # asked of the file system itself: os.access may say yes to root on a read-only one
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return f"{probe} is on a read-only file system"
    return None if os.access(probe, os.W_OK | os.X_OK) else f"{probe}: {os.strerror(errno.EACCES).lower()}"


def output_dir(path: str | os.PathLike | None, flag: str) -> Path:
    """A folder the command writes into, created later if missing: a real path, not a file, writable."""
    if path is None or not str(path).strip():
        raise PathError(f"{flag} is empty: give a folder, e.g. {flag} runs/my_run")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise PathError(f"{flag} {p} is a file; give a folder")
    why = unwritable_reason(p)
    if why:
        raise PathError(f"{flag} {p}: cannot write there ({why}); give a writable folder")
    return p


def output_file(path: str | os.PathLike | None, flag: str) -> Path:
    """A file the command writes: a real path, not a folder, in a writable place."""
    if path is None or not str(path).strip():
        raise PathError(f"{flag} is empty: give a file name")
    p = Path(path).expanduser()
    if p.is_dir():
        raise PathError(f"{flag} {p} is a folder; give a file name")
    why = unwritable_reason(p.parent if not p.exists() else p)
    if why is None and p.exists() and not os.access(p, os.W_OK):
        why = f"{p}: {os.strerror(errno.EACCES).lower()}"
    if why:
        raise PathError(f"{flag} {p}: cannot write there ({why}); give a file in a writable folder")
    return p
