"""Shared fixtures, markers and the end-of-run notice of what was skipped for want of hardware.

Markers
    ``gpu``: needs a CUDA GPU; skipped without one. With ``PD_GPU_TESTS_ON_CPU=1`` the GPU tests that
    take the :func:`gpu_device` fixture run on the CPU instead, so their code paths are checked on a
    machine without a GPU (their CPU-vs-GPU comparisons then compare the CPU with itself).
    ``browser``: drives the real app in headless Chromium (Debian's ``chromium``).
    ``slow``: takes more than ~30 s.

Threads: ``pytest-xdist`` runs the suite in several worker processes (``-n`` in ``pyproject.toml``).
Each worker gets ``PD_THREADS`` = its share of the CPU cores (at least 1) unless ``PD_THREADS`` is
set, and exports it, so the subprocesses a test starts (the app, the command line, Ray workers)
share the cores the same way instead of each taking all of them.
"""
from __future__ import annotations

import os

import pytest
import torch

#: Run GPU-marked tests (those taking ``gpu_device``) on the CPU: checks their code without a GPU.
GPU_TESTS_ON_CPU = os.environ.get("PD_GPU_TESTS_ON_CPU", "").strip() in ("1", "true", "yes")
HAVE_CUDA = torch.cuda.is_available()


def _threads_per_worker() -> int:
    """PD_THREADS if set; else the cores this process may use divided among the xdist workers."""
    if os.environ.get("PD_THREADS"):
        return max(1, int(os.environ["PD_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, cores // max(1, workers))


_THREADS = _threads_per_worker()
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Only in a worker: the xdist controller's environment is what its workers inherit, so an export
    # there would hand every worker all the cores.
    os.environ["PD_THREADS"] = str(_THREADS)
torch.set_num_threads(_THREADS)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "browser: drives the real app in headless Chromium")
    config.addinivalue_line("markers", "slow: takes more than ~30 s")


def pytest_collection_modifyitems(config, items):
    if HAVE_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not (GPU_TESTS_ON_CPU and "gpu_device" in item.fixturenames):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpu_device() -> torch.device:
    """The device GPU-marked tests compute on: ``cuda`` (``cpu`` under ``PD_GPU_TESTS_ON_CPU=1``)."""
    if HAVE_CUDA:
        return torch.device("cuda")
    if GPU_TESTS_ON_CPU:
        return torch.device("cpu")
    pytest.skip("needs a CUDA GPU")


@pytest.fixture(scope="session")
def model():
    """The embedded EfficientNet-Lite0 on the CPU (shared, frozen)."""
    from pd_core.models import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def correct_pair(model):
    """Two gallery photos the embedded model classifies correctly, as ``[(path, label index)]``: the
    small folder of the sweep and dose tests."""
    from gallery_cases import correct_gallery_items

    return correct_gallery_items(model, ("imagenet_05_853.jpg", "imagenet_16_251.jpg"))


# --- the loud notice: what did not run here, and what it takes to run it ---------------------------

def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def hardware_skips(reports) -> dict[str, list[str]]:
    """Node ids of the skipped tests that needed a browser or a GPU, by kind."""
    found: dict[str, list[str]] = {"browser": [], "gpu": []}
    for report in reports:
        keywords = getattr(report, "keywords", {}) or {}
        reason = _skip_reason(report).lower()
        # By the reason, not the marker alone: a GPU test skipped for another reason (the inner half of a
        # Ray test, outside its namespace) did not miss the hardware.
        if "cuda" in reason or ("gpu" in keywords and "gpu" in reason):
            found["gpu"].append(report.nodeid)
        elif "chromium" in reason or "playwright" in reason or ("browser" in keywords and "browser" in reason):
            found["browser"].append(report.nodeid)
    return found


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    found = hardware_skips(terminalreporter.stats.get("skipped", []))
    lines = []
    if found["browser"]:
        lines.append(f"{len(found['browser'])} BROWSER TEST(S) SKIPPED: they need Playwright and Debian's Chromium at "
                     "/usr/bin/chromium (apt-get install chromium; .ci/run installs it). The real app was NOT "
                     "checked in a browser.")
    if found["gpu"]:
        lines.append(f"{len(found['gpu'])} GPU TEST(S) SKIPPED: no CUDA GPU here. Nothing was checked on a GPU; "
                     "run bash bench/gpu_check.sh on a GPU machine (PD_GPU_TESTS_ON_CPU=1 runs their code on the "
                     "CPU).")
    if lines:
        terminalreporter.write_sep("!", "skipped for want of hardware", red=True, bold=True)
        for line in lines:
            terminalreporter.write_line(line, red=True, bold=True)


@pytest.fixture(autouse=True)
def _defence_registry_left_as_found():
    """A plugin loaded by a test (``--defence FILE.py:FUNC`` registers it in this process) must not
    leak into the next test of the same worker: entries a test added are removed after it."""
    from pd_core.defences import DEFENCES, unregister_defence

    before = set(DEFENCES)
    yield
    for name in set(DEFENCES) - before:
        unregister_defence(name)
