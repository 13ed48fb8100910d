"""Package hygiene: importing jaxkd pulls in no torch and opens no network connection (issue 2)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import socket, sys
def _no_network(*a, **k):
    raise AssertionError("jaxkd touched the network on import")
socket.socket.connect = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network
import jaxkd, jaxkd.config, jaxkd.models, jaxkd.losses, jaxkd.data, jaxkd.train, jaxkd.evaluate, jaxkd.predict
import jaxkd.tasks.kd, jaxkd.tasks.tokens, jaxkd.tasks.teachers, jaxkd.train.checkpoint, jaxkd.convert
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.") or m == "tensorflow")
assert not bad, f"imported {bad[:3]}"
print("ok")
"""


def test_import_needs_no_torch_and_no_network():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_probe_would_catch_torch():
    """Negative control: the same probe fails when something imports torch."""
    code = _PROBE.replace("print(\"ok\")", "").replace("import jaxkd, ", "import torch, jaxkd, ")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "imported ['torch'" in out.stderr
