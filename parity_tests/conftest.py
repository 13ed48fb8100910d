"""Parity-suite hooks: the measured figures the tests record (``record_property``) reach junit and
``python -m parity_tests.review`` as plain Python values.

pytest-xdist serialises each test report with execnet, which refuses numpy scalars and arrays: one
``record_property("d", np.float32(...))`` would crash the worker (INTERNALERROR) and lose the rest of its tests.
"""

from __future__ import annotations

import numbers

import pytest


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
