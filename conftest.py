"""Shared pytest fixtures for tests/ and parity_tests/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


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
