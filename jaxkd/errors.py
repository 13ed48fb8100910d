"""Formatting a caught exception for jaxkd's one-line error messages."""

from __future__ import annotations


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of ``str(e)`` ('' for an empty message), cut to `limit` characters if given."""
    text = str(e)
    line = text.splitlines()[0] if text.strip() else ""
    return line if limit is None else line[:limit]


def describe(e: BaseException, limit: int | None = None) -> str:
    """'TypeName: first line of the message' (see :func:`first_line`), for "... (describe(e)); fix" messages."""
    return f"{type(e).__name__}: {first_line(e, limit)}"
