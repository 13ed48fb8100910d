"""The persistent compilation cache of the CLIs (jaxkd.cache): where it lives, how it is turned off, and that a
second run of the same preset compiles nothing new (every program a cache hit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxkd import cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(monkeypatch):
    for k in ("JAXKD_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_default_folder_is_per_user(env, tmp_path):
    env.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == str(tmp_path / ".cache" / "jaxkd" / "xla")
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == str(tmp_path / "xdg" / "jaxkd" / "xla")


def test_environment_moves_or_disables_it(env, tmp_path):
    env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert cache.cache_dir() == str(tmp_path / "jax")
    env.setenv("JAXKD_COMPILATION_CACHE", str(tmp_path / "mine"))  # jaxkd's own variable wins
    assert cache.cache_dir() == str(tmp_path / "mine")
    for off in ("0", "off", "", "false"):
        env.setenv("JAXKD_COMPILATION_CACHE", off)
        assert cache.cache_dir() is None and cache.enable_compilation_cache() is None


def test_unwritable_folder_turns_it_off_with_a_note(env, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env.setenv("JAXKD_COMPILATION_CACHE", str(blocker / "cache"))  # below a file: cannot be created (even as root)
    assert cache.enable_compilation_cache() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: compilation cache off: cannot write") and "a-file" in err


def _train(workdir: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAXKD_COMPILATION_CACHE=str(cache_dir))
    return subprocess.run([sys.executable, "-m", "jaxkd.train", "--config", "configs/quickstart.py:smoke",
                           "--workdir", str(workdir), "--config.logging.progress_bar=false", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _entries(store: Path) -> set[str]:
    return {n for n in os.listdir(store) if not n.startswith(".")}


def test_second_run_compiles_nothing_new(tmp_path):
    """The first run fills the cache; the same preset in another workdir finds every program there. Negative control:
    another learning rate is another program (the schedule
    is a table in the step), so that run adds entries."""
    store = tmp_path / "xla"
    first = _train(tmp_path / "run1", store)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = _entries(store)
    assert len(entries) >= 3  # the train step, the input pipeline, evaluation, ...
    second = _train(tmp_path / "run2", store)
    assert second.returncode == 0, second.stderr[-2000:]
    assert _entries(store) == entries
    other = _train(tmp_path / "run3", store, "--config.training.learning_rate=0.01")
    assert other.returncode == 0, other.stderr[-2000:]
    assert _entries(store) > entries
