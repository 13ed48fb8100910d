"""The persistent XLA compilation cache of jaxkd's command-line tools.

Every CLI (`python -m jaxkd.train`, `evaluate`, `predict`, ...) turns on JAX's persistent compilation cache before
it compiles anything, so a second run of the same preset, a resume and an evaluation reuse the compiled programs
instead of compiling them again. The cache key is the program, the backend and the versions: the same preset again,
a resume or an evaluation finds its programs there; another model, schedule or seed compiles anew.

Where: ``$JAXKD_COMPILATION_CACHE`` if set (a folder; ``0``, ``off`` or an empty value turns the cache off), else
``$JAX_COMPILATION_CACHE_DIR`` if the user set JAX's own variable, else ``$XDG_CACHE_HOME/jaxkd/xla`` (default
``~/.cache/jaxkd/xla``). A folder that cannot be created or written turns the cache off with one note on stderr:
the run itself never fails because of its cache. A run of several processes on CPU with jax 0.12 compiles without
it: there, programs with cross-process collectives loaded from the cache hang (see
`jaxkd.train.loop.maybe_initialize_distributed`).
"""

from __future__ import annotations

import os
import sys
import tempfile

__all__ = ["cache_dir", "enable_compilation_cache"]

_OFF = ("", "0", "off", "false", "no", "none")


def cache_dir() -> str | None:
    """The folder the cache would use, or None when the environment turns it off."""
    v = os.environ.get("JAXKD_COMPILATION_CACHE")
    if v is not None:
        return None if v.strip().lower() in _OFF else os.path.abspath(os.path.expanduser(v))
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.path.abspath(os.path.expanduser(os.environ["JAX_COMPILATION_CACHE_DIR"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxkd", "xla")


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache in :func:`cache_dir`, for every compiled program however quick
    its compilation (the many small programs of a run add up); returns the folder, or None when it is off or not
    writable."""
    d = cache_dir()
    if d is None:
        return None
    try:
        os.makedirs(d, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".probe-"):
            pass
    except OSError as e:
        print(f"note: compilation cache off: cannot write {d} ({e.strerror or e}); set JAXKD_COMPILATION_CACHE "
              "to a writable folder, or to 0 to silence this", file=sys.stderr)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", d)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return d
