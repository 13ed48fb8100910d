"""Package hygiene: importing jaxkd pulls in no torch, opens no network connection (issue 2) and leaves the
environment alone: the XLA:CPU flags are the command-line entry points' business (issue 19); the built wheel
(distribution jaxkd-distill) installs and imports outside the source tree (issue 19 item 8)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

_PROBE = """
import socket, sys
def _no_network(*a, **k):
    raise AssertionError("jaxkd touched the network on import")
socket.socket.connect = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network
import jaxkd, jaxkd.config, jaxkd.models, jaxkd.losses, jaxkd.data, jaxkd.train, jaxkd.evaluate, jaxkd.predict
import jaxkd.tasks.kd, jaxkd.tasks.tokens, jaxkd.tasks.teachers, jaxkd.train.checkpoint, jaxkd.convert
import jaxkd.analyze.run, jaxkd.analyze.features, jaxkd.analyze.hessian, jaxkd.analyze.plots, jaxkd.analyze.__main__
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


# ---------------------------------------------------------------------------------------------------------------
# The built wheel (issue 19 item 8): the distribution is jaxkd-distill, the import packages jaxkd and torch_ref.

_ROOT = Path(__file__).resolve().parents[1]
_IMPORT_PACKAGES = ("jaxkd", "torch_ref")
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "venv*", "workdirs", "outputs", "build", "dist", "*.egg-info",
                                     "__pycache__", ".pytest_cache", ".hypothesis", "ci-junit.xml")

_WHEEL_PROBE = """
import importlib, importlib.metadata as md, pathlib, sys
import jaxkd, torch_ref
venv = pathlib.Path(sys.prefix).resolve()
for pkg in (jaxkd, torch_ref):
    where = pathlib.Path(pkg.__file__).resolve()
    assert venv in where.parents, f"{pkg.__name__} imported from {where}, not from the wheel in {venv}"
assert md.version("jaxkd-distill") == jaxkd.__version__, (md.version("jaxkd-distill"), jaxkd.__version__)
modules = sys.argv[1:]
for name in modules:  # every module the wheel holds (a module importing one it lacks fails here)
    importlib.import_module(name)
import jaxkd.config  # the presets travel in the wheel: a bare name loads one (deit_cifar builds on vit_cifar)
presets = sorted(p.stem for p in (pathlib.Path(jaxkd.__file__).parent / "configs").glob("*.py"))
assert "quickstart" in presets and len(presets) >= 18, presets
for name in presets:
    jaxkd.config.load(name)
assert jaxkd.config.load("deit_cifar:smoke").distillation.enabled
import contextlib, io, runpy
sys.argv = ["jaxkd.train", "--help"]  # a CLI, as python -m jaxkd.train --help (in this process: jax imports once)
help_text = io.StringIO()
try:
    with contextlib.redirect_stdout(help_text):
        runpy.run_module("jaxkd.train", run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert e.code in (0, None), f"jaxkd.train --help exited {e.code}"
assert "--config" in help_text.getvalue(), help_text.getvalue()
print("ok", len(modules))
"""


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    """Builds the wheel from a copy of the source tree (no build/ or egg-info left in the checkout), checks it holds
    every module of jaxkd/ and torch_ref/ (package discovery picks up new subpackages), installs it with --no-deps
    into a fresh venv that sees this environment's dependencies through a .pth line (nothing is downloaded: the
    build backend is this environment's setuptools, which the test extra brings), and imports every module and runs
    jaxkd.train --help there from an empty working directory, and loads every preset by its bare name."""
    src = tmp_path / "src"
    shutil.copytree(_ROOT, src, ignore=_NOT_SOURCE)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(wheels), str(src)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = wheels.glob("jaxkd_distill-*.whl")

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    source = {p.relative_to(src).as_posix() for top in _IMPORT_PACKAGES for p in (src / top).rglob("*.py")}
    missing = sorted(source - names)
    assert not missing, f"the wheel lacks {len(missing)} module(s) of the source tree, e.g. {missing[:5]}"
    assert not {n for n in names if n.startswith(("tests/", "parity_tests/", "configs/"))}, "tests in the wheel"
    assert "jaxkd/configs/quickstart.py" in names, "the presets are not in the wheel"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = sysconfig.get_path("purelib", "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix",
                                 vars={"base": str(venv), "platbase": str(venv)})
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_deps_from_test_env.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                        str(wheel)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in names  # (presets: loaded below)
                     if n.endswith(".py") and not n.endswith("__main__.py") and not n.startswith("jaxkd/configs/"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    r = subprocess.run([str(py), "-c", _WHEEL_PROBE, *modules], cwd=cwd, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip() == f"ok {len(modules)}", r.stdout[-2000:] + r.stderr[-3000:]
