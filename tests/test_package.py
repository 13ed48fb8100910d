"""Package hygiene: importing jaxkd pulls in no torch, opens no network connection (issue 2) and leaves the
environment alone: the XLA:CPU flags are the command-line entry points' business (issue 19)."""

from __future__ import annotations

import os
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


_ENV_PROBE = """
import os, sys
given = os.environ.get("XLA_FLAGS")
import jaxkd, jaxkd.config, jaxkd.models, jaxkd.losses, jaxkd.data, jaxkd.train.loop, jaxkd.evaluate, jaxkd.predict
import jaxkd.tasks.kd, jaxkd.tasks.tokens, jaxkd.convert, jaxkd.summary, jaxkd.study, jaxkd.bench
assert os.environ.get("XLA_FLAGS") == given, (given, os.environ.get("XLA_FLAGS"))
jaxkd.config.main_guard(lambda: print(os.environ.get("XLA_FLAGS", "<unset>")))
"""


def _env_probe(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXKD_XLA_DEFAULTS")}
    out = subprocess.run([sys.executable, "-c", _ENV_PROBE], capture_output=True, text=True, timeout=300,
                         env={**env, **extra})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_import_leaves_xla_flags_alone_and_entry_points_add_them():
    from jaxkd.config import CPU_XLA_FLAGS

    assert _env_probe() == " ".join(CPU_XLA_FLAGS)
    assert _env_probe(JAXKD_XLA_DEFAULTS="0") == "<unset>"
    given = "--xla_cpu_experimental_ynn_fusion_type=all --xla_force_host_platform_device_count=2"
    assert _env_probe(XLA_FLAGS=given) == given  # a flag already given is kept as given
