"""pd_core.runtime: the allocator setting must actually cut the page faults it is there for."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The defence's own workload (deflect + denoise a batch of 32 images once after a warm-up), counting
# the minor page faults of the process during that one call.
PROBE = textwrap.dedent("""
    import resource
    import torch
    from pd_core import runtime
    runtime.configure_from_env()
    from pd_core.deflection import deflect
    from pd_core.randomness import make_generator
    from pd_core.denoising import wavelet_denoise
    torch.set_num_threads(1)
    x = torch.rand(32, 3, 224, 224)
    wavelet_denoise(deflect(x, None, 100, 10, generator=make_generator(0)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    wavelet_denoise(deflect(x, None, 100, 10, generator=make_generator(0)))
    print(runtime._tuned is True, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _probe(tuning: str) -> tuple[bool, int]:
    env = {**os.environ, "PD_MALLOC_TUNING": tuning, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                         check=True, timeout=300, cwd=ROOT).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    # Measured on a quiet host (9 runs each): 1-625 faults with the setting, 9 408-10 584 without
    # (4 KiB pages; glibc's own dynamic threshold catches up only a few calls later). On a busy host
    # other work adds faults to a count (once 6 469), never takes them away, so the tuned count is
    # the least of up to three fresh processes; one untuned process is the baseline.
    untuned, faults_default = _probe("0")
    assert not untuned
    faults_tuned = []
    for _ in range(3):
        tuned, faults = _probe("1")
        assert tuned
        faults_tuned.append(faults)
        if faults < 0.25 * faults_default:
            break
    assert min(faults_tuned) < 0.25 * faults_default, (faults_tuned, faults_default)


def test_keep_freed_memory_answers_the_same_twice():
    from pd_core.runtime import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
    assert first == sys.platform.startswith("linux")


# Two threads doing small parallel sums with 3 ms pauses between them: spinning OpenMP threads burn a
# core through every pause, sleeping ones do not. ``FIRST`` is what the entry point imports first.
WAIT_PROBE = textwrap.dedent("""
    import os, sys, time
    {first}
    import torch
    torch.set_num_threads(2)
    x = torch.rand(2_000_000)
    (x * 1.0).sum()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(100):
        (x * 1.0001).sum()
        time.sleep(0.003)
    print(os.environ.get("OMP_WAIT_POLICY"), time.process_time() - cpu, time.perf_counter() - start)
""")


def _wait_probe(first: str, **env) -> tuple[str, float]:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", WAIT_PROBE.format(first=first)], capture_output=True, text=True,
                         env=environ, check=True, timeout=120, cwd=ROOT).stdout.split()
    return out[0], float(out[1])


def test_the_command_line_lets_idle_openmp_threads_sleep_unless_told_otherwise():
    # pd_core.runtime's docstring: spinning threads made the app's story 2-6x slower on 2 busy cores.
    policy, cpu_passive = _wait_probe("import pd_core.cli")
    assert policy == "PASSIVE"
    policy, cpu_spinning = _wait_probe("")  # torch alone: libgomp's default spins between regions
    assert policy == "None"
    assert cpu_passive < 0.6 * cpu_spinning, (cpu_passive, cpu_spinning)
    assert _wait_probe("import pd_core.cli", OMP_WAIT_POLICY="ACTIVE")[0] == "ACTIVE"  # the operator's wins


def test_wait_passively_is_too_late_once_torch_is_imported(monkeypatch):
    import torch  # noqa: F401 - imported by the test session already; libgomp has read its settings

    from pd_core.runtime import wait_passively

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert wait_passively() is False and "OMP_WAIT_POLICY" not in os.environ


def test_the_app_sets_the_wait_policy_before_anything_imports_torch():
    # app.py's first statements, run alone: nothing before wait_passively() may import torch.
    source = (ROOT / "app.py").read_text()
    head = source[: source.index("wait_passively()") + len("wait_passively()")]
    code = head + "\nimport sys, os\nprint('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))\n"
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True,
                         timeout=60, cwd=ROOT).stdout.split()
    assert out == ["False", "PASSIVE"]
