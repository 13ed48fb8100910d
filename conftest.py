"""Shared pytest fixtures for tests/ and parity_tests/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# One persistent XLA compilation cache for the whole test run (jaxkd.cache): every xdist worker and every CLI
# subprocess a test starts inherits it, so the small presets that many tests run compile once. A user's own
# JAXKD_COMPILATION_CACHE (a folder, or 0 for none) is kept.
os.environ.setdefault("JAXKD_COMPILATION_CACHE", str(Path(tempfile.gettempdir()) / f"jaxkd-tests-xla-{os.getuid()}"))
# Likewise one decoded-data cache (jaxkd.data.decoded_cache): CIFAR-10's JPEG tar is decoded once per test run.
os.environ.setdefault("JAXKD_DATA_CACHE", str(Path(tempfile.gettempdir()) / f"jaxkd-tests-data-{os.getuid()}"))

# The XLA:CPU flags every jaxkd command sets in its entry point (jaxkd.config.main_guard), for the tests that run
# the trainer in-process: they time and behave as the commands do. JAXKD_XLA_DEFAULTS=0 turns them off here too.
from jaxkd.config import add_cpu_xla_flags  # noqa: E402

add_cpu_xla_flags()


def pytest_configure(config):
    from jaxkd.cache import enable_compilation_cache

    enable_compilation_cache()


def _shared_data_dir() -> Path:
    env = os.environ.get("JAXKD_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets of ../shared/data (MNIST npz, CIFAR-10 JPEG tar).

    Missing data fails loudly in CI (CI=true) and skips elsewhere.
    """
    d = _shared_data_dir()
    needed = ["mnist.npz", "cifar10-jpeg.tar.gz"]
    missing = [n for n in needed if not (d / n).is_file()]
    if missing:
        msg = f"real test data missing in {d}: {', '.join(missing)} (set JAXKD_SHARED_DATA to the shared/data folder)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d
