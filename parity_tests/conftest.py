"""Parity-suite hooks.

* Precision: every parity test runs with full float32 matmuls and convolutions on any backend --
  ``jax_default_matmul_precision='highest'`` and torch without TF32 (:mod:`parity_tests._precision` says why: on a
  GPU both frameworks default to TF32, ~1e-3 relative, while the suite's float32 tolerances are 1e-5 and below).
  Set for the parity package only (package scope: torn down before ``tests/`` runs in the same process, so the
  trainer's own tests keep its setting), checked and restored around each test, so that a test which changes it
  (``jaxkd.train.loop.train`` sets ``'float32'``, or ``'tensorfloat32'`` with ``training.use_tf32``) cannot leak into
  the next one. Tests that want reduced precision on purpose use a ``with`` block
  (``jax.default_matmul_precision(...)``, ``torch.autocast``), which restores itself.
* GPU memory: JAX would preallocate 75 % of the GPU in each pytest-xdist worker (and torch shares the GPU in the
  bf16 part), so preallocation is off unless ``XLA_PYTHON_CLIENT_PREALLOCATE`` says otherwise.
* The measured figures the tests record (``record_property``) reach junit and ``python -m parity_tests.review`` as
  plain Python values: pytest-xdist serialises each test report with execnet, which refuses numpy scalars and
  arrays; one ``record_property("d", np.float32(...))`` would crash the worker (INTERNALERROR) and lose the rest of
  its tests.
"""

from __future__ import annotations

import numbers
import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX starts its GPU client

import pytest  # noqa: E402

from parity_tests import _precision  # noqa: E402


@pytest.fixture(scope="package", autouse=True)
def parity_full_precision():
    """Full float32 matmul / convolution precision in jax and torch for the whole parity suite, then restored."""
    restore = _precision.set_full_precision()
    yield
    restore()


@pytest.fixture(autouse=True)
def _precision_unchanged(parity_full_precision, request):
    """Each test starts at full precision; one that changes the global setting is put back (and, unless it only
    re-spelt full precision -- 'float32' is 'highest' --, reported as an error of its teardown)."""
    before = _precision.describe()
    assert _precision.is_full_precision(), before
    yield
    after = _precision.describe()
    if after != before:
        full = _precision.is_full_precision()
        _precision.set_full_precision()
        if not full:
            pytest.fail(f"{request.node.nodeid} left the parity suite's precision changed: {after} (was {before})",
                        pytrace=False)


def _plain(value):
    """numpy scalars / arrays and containers of them -> Python floats, ints, lists and dicts; others unchanged."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy (or jax) scalar or array
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str, int, float)) or value is None:
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    report.user_properties = [(name, _plain(value)) for name, value in report.user_properties]
    return report
