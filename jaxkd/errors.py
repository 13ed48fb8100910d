"""jaxkd's error types and the formatting of caught exceptions for its one-line messages.

Every error jaxkd raises on purpose derives from :class:`JaxkdError`. Its message is one line that names the
problem and the fix; the command-line entry points (``jaxkd.config.main_guard``) print it as ``error: ...`` and
exit with the class's ``exit_code``: 2 for bad input (a config, a path, data, a checkpoint, a run stopped by its
numerics guard), 1 for a run that failed on its own (:class:`RunFailure`: a checkpoint that cannot be written).
Each subclass also keeps the builtin base its callers catch (ValueError, FloatingPointError, RuntimeError).
"""

from __future__ import annotations

__all__ = ["JaxkdError", "RunFailure", "NonFiniteError", "TeacherError", "TeacherWeightsNotFound", "first_line",
           "describe"]


class JaxkdError(Exception):
    """Base of jaxkd's own errors: a one-line message naming the problem and the fix; exit code 2 in a CLI."""

    exit_code = 2


class RunFailure(JaxkdError, RuntimeError):
    """A run that failed through no fault of its input (a checkpoint that cannot be written): exit code 1."""

    exit_code = 1


class NonFiniteError(JaxkdError, FloatingPointError):
    """The numerics guard stopped a run: a non-finite loss, gradient or weight (the message names the step and the
    fixes: learning rate, clipping, precision)."""


class TeacherError(JaxkdError, ValueError):
    """A teacher cannot be built: bad weight file, wrong architecture, bad argument (``jaxkd.tasks.teachers``; here so
    that the modules of ``jaxkd.tasks`` that read weight files can raise it without importing each other)."""


class TeacherWeightsNotFound(TeacherError, FileNotFoundError):
    """The teacher's weight file does not exist (the message says where to download it)."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of ``str(e)`` ('' for an empty message), cut to `limit` characters if given."""
    text = str(e)
    line = text.splitlines()[0] if text.strip() else ""
    return line if limit is None else line[:limit]


def describe(e: BaseException, limit: int | None = None) -> str:
    """'TypeName: first line of the message' (see :func:`first_line`), for "... (describe(e)); fix" messages."""
    return f"{type(e).__name__}: {first_line(e, limit)}"
