"""Run a Ray test file inside a loopback-only network namespace (shared by the Ray test files).

Ray listens on every interface, and on these machines only loopback traffic is allowed. So each Ray
test file has one outer test that calls :func:`run_inner_tests`: it starts
``unshare -n sh -c 'python tests/loopback_up.py && exec python -m pytest <file>'`` with
``PD_RAY_INNER=1``, and the file's inner tests (marked with :data:`inner`) do the work there. Where no
such namespace can be made, the outer test is skipped with the reason. ``loopback_up.py`` does what
``ip link set lo up`` does, from the standard library: the first GPU machine had no ``ip`` command.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

INNER = os.environ.get("PD_RAY_INNER") == "1"
REPO = Path(__file__).resolve().parent.parent
#: The shell command, run first inside the new namespace, that brings its loopback interface up.
LOOPBACK_UP = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve().parent / 'loopback_up.py'))}"

#: Marks a test that runs only inside the namespace started by the outer test.
inner = pytest.mark.skipif(not INNER, reason="runs inside the loopback namespace started by the outer test")


def unshare_flag() -> str:
    """``-n`` (or ``-rn`` as an unprivileged user) if a loopback-only namespace can be made; else skip."""
    if shutil.which("unshare") is None:
        pytest.skip("Ray tests need a loopback-only network namespace: the unshare command is not installed")
    for flag in ("-n", "-rn"):
        probe = subprocess.run(["unshare", flag, "sh", "-c", f"{LOOPBACK_UP} && true"], capture_output=True,
                               text=True, timeout=30)
        if probe.returncode == 0:
            return flag
    pytest.skip("Ray tests need a loopback-only network namespace: cannot make one "
                f"({probe.stderr.strip()[:120]})")


def run_inner_tests(test_file: str, expected_passed: int) -> None:
    """Run ``test_file``'s inner tests in the namespace; fail unless exactly ``expected_passed`` pass."""
    flag = unshare_flag()
    # Each run gets its own Ray folder: Ray keeps its sockets, logs and the address of "the current
    # cluster" under one temporary folder, which two test files running at once (pytest-xdist workers,
    # each in its own network namespace) would otherwise share. A short path: Unix sockets live there.
    ray_tmp = tempfile.mkdtemp(prefix="pdray-", dir="/tmp")
    env = {**os.environ, "PD_RAY_INNER": "1", "PD_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_TMPDIR": ray_tmp}
    # -n 0: the inner tests run in this one process (the suite's addopts would start xdist workers).
    cmd = (f"{LOOPBACK_UP} && exec {shlex.quote(sys.executable)} -m pytest -n 0 -x -q -p no:cacheprovider "
           f"{Path(test_file).resolve().relative_to(REPO)}")
    try:
        proc = subprocess.run(["unshare", flag, "sh", "-c", cmd], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=1500)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert f"{expected_passed} passed" in proc.stdout, tail
