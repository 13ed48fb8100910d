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


# ----------------------------------------------------------------------------------------------------------------
# CI's seeded sample of the heavy tests
#
# The tests below each take a minute or more of CPU (a trainer killed and rerun, a preset trained end to end, a
# benchmark CLI, a study): together they are about half of the suite's time. A plain `pytest` run keeps a seeded
# sample of them (HEAVY_KEEP of the units, at least one) and every other test; JAXKD_TEST_ALL=1 keeps them all.
# The seed is JAXKD_TEST_SEED, else the checked-out commit, so each landing on main runs another sample and the
# same commit always runs the same one (the header of the run prints it). A test that the review plan maps
# (parity_tests/review_items*.py) is never dropped: REVIEW.md always has its result. A unit is kept or dropped
# whole (tests sharing one expensive fixture).
HEAVY_KEEP = 0.2
HEAVY = [
    # killed, stopped or refused runs and their reruns (tests/test_resume.py, test_multiprocess.py, the faults)
    ("tests/test_resume.py::test_kill9_then_rerun_is_bit_identical",),
    ("tests/test_resume.py::test_host_placement_killed_and_rerun_ends_on_the_device_runs_parameters",),
    ("tests/test_resume.py::test_different_config_refused_unless_force",),
    ("tests/test_resume.py::test_resume_on_fewer_devices",),
    ("tests/test_resume.py::test_sigterm_on_an_epochs_last_step_finishes_the_epoch_first",),
    ("tests/test_resume.py::test_second_run_on_a_live_workdir_is_refused",),
    ("tests/test_multiprocess.py::test_sigterm_to_one_process_stops_all_at_one_step_then_resumes",),
    ("tests/test_multiprocess.py::test_failed_save_on_one_process_stops_all_then_resumes",),
    ("tests/test_multiprocess.py::test_sigkill_of_process_0_stops_its_peer_then_the_rerun_resumes",),
    ("tests/test_faults.py::test_one_process_killed_in_write_swa_and_export",),
    ("tests/test_disk_faults.py::test_full_disk_one_line_checkpoints_intact_then_resumes",),
    ("tests/test_disk_faults.py::test_workdir_turning_read_only_mid_run",),
    ("tests/test_disk_faults.py::test_a_finished_run_in_a_read_only_place_is_still_evaluated",),
    # presets and studies trained end to end
    ("tests/test_distill.py::test_kd_on_cifar_presets_smoke",),
    ("tests/test_distill.py::test_kd_on_mnist_preset_smoke",),
    ("tests/test_distill.py::test_ss_preset_smoke_runs[deit_ss_cifar_ce_only]",),
    ("tests/test_distill.py::test_projectors_learn_on_a_fixed_batch",),
    ("tests/test_train.py::test_smoke_presets_train_end_to_end",),
    ("tests/test_yaml_presets.py::test_imported_presets_train[mnist_cnn]",),
    ("tests/test_yaml_presets.py::test_imported_presets_train[cifar_cnn]",),
    ("tests/test_yaml_presets.py::test_imported_presets_train[vit]",),
    ("tests/test_study.py::test_mnist_suite_smoke_end_to_end",),
    ("tests/test_study.py::test_cifar_teachers_smoke_trains_and_analyses_the_students",),
    ("tests/test_study.py::test_study_writes_results", "tests/test_study.py::test_results_json_schema_twins_and_deltas",
     "tests/test_study.py::test_interrupted_study_resumes", "tests/test_study.py::test_changed_config_is_refused"),
    ("tests/test_recipe.py::",),
    ("tests/test_wiring_tokens.py::test_jaxkd_vit_teacher_input_tokens_and_loss",),
    ("tests/test_continuation.py::test_trainer_resumes_at_the_next_epoch",),
    ("tests/test_cnn_teachers.py::test_teacher_preset_trains_and_a_deit_distils_from_it",),
    ("tests/test_train_structural.py::test_training_with_cka_and_gram",),
    # the benchmark and tooling CLIs, each run for real on tiny settings
    ("tests/test_bench.py::test_gpu_report_smoke",),
    ("tests/test_bench.py::test_models_quick_json",),
    ("tests/test_bench.py::test_profile_tiny_run",),
    ("tests/test_bench.py::test_before_variants_change_one_model_instance_not_the_production_classes",),
    ("tests/test_bench_trainer.py::test_bench_trainer_quick_json",),
    ("tests/test_pipeline.py::test_bench_data_cli_json",),
    ("tests/test_cache.py::test_second_run_compiles_nothing_new",),
    ("tests/test_package.py::test_import_leaves_xla_flags_alone_and_entry_points_add_them",),
    ("tests/test_train_features.py::test_exploding_weights_stop_the_run_before_any_bad_checkpoint_or_export",),
]


def _heavy_seed() -> str:
    if os.environ.get("JAXKD_TEST_SEED"):
        return os.environ["JAXKD_TEST_SEED"]
    import subprocess

    r = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "0"


def _covers(prefix: str, node_id: str) -> bool:
    """Whether a HEAVY entry covers a node id: a file's tests ('path::'), one parametrisation ('...[id]'), or a
    function with all its parametrisations."""
    if prefix.endswith("::"):
        return node_id.startswith(prefix)
    return node_id == prefix or (not prefix.endswith("]") and node_id.startswith(prefix + "["))


def heavy_sample(node_ids, seed: str, keep: float = HEAVY_KEEP) -> tuple[set[str], list[int]]:
    """(the node ids a sampled run drops, the indices into HEAVY of the units it keeps) for the collected
    ``node_ids``: review-mapped tests never dropped; ceil(keep * units present), at least one, kept."""
    import math
    import random

    try:
        from parity_tests.review import selects
        from parity_tests.review_items import all_items

        mapped = [t for it in all_items() for t in it.tests]
    except ImportError:  # (a checkout without the parity suite: nothing is protected)
        mapped, selects = [], None
    units = {}
    for i, unit in enumerate(HEAVY):
        ids = [n for n in node_ids if any(_covers(p, n) for p in unit)]
        ids = [n for n in ids if not any(selects(m, n) for m in mapped)] if selects else ids
        if ids:
            units[i] = ids
    kept = sorted(random.Random(f"jaxkd-heavy-{seed}").sample(sorted(units), max(1, math.ceil(keep * len(units))))
                  if units else [])
    return {n for i, ids in units.items() if i not in kept for n in ids}, kept


def _whole_suite(config) -> bool:
    """A run of folders (the suite, tests/, parity_tests/): sampled. Files or tests named on the command line run
    whole."""
    return all(Path(a.split("::")[0]).is_dir() for a in config.args) and os.environ.get("JAXKD_TEST_ALL") != "1"


def pytest_collection_modifyitems(config, items):
    if not _whole_suite(config):
        return
    drop, _ = heavy_sample([it.nodeid for it in items], _heavy_seed())
    if drop:
        config.hook.pytest_deselected(items=[it for it in items if it.nodeid in drop])
        items[:] = [it for it in items if it.nodeid not in drop]


def pytest_report_header(config):
    if not _whole_suite(config):
        return "heavy tests: all (files or tests named, or JAXKD_TEST_ALL=1)"
    return (f"heavy tests: a seeded sample (seed {_heavy_seed()}, {HEAVY_KEEP:.0%} of {len(HEAVY)} units; "
            "JAXKD_TEST_ALL=1 runs all, JAXKD_TEST_SEED=S picks another sample)")
