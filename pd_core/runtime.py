"""Process-wide CPU settings for the app, the command line and the benchmarks.

Why the allocator matters here: the defence and the model allocate many short-lived tensors of a
few megabytes (a 224² batch block, wavelet sub-bands, activations). glibc's ``malloc`` serves
blocks above its ``mmap`` threshold with fresh ``mmap`` calls and gives heap memory above its trim
threshold back to the kernel on ``free``; each new block then costs page faults and the kernel's
zeroing of every page. On this project's 2-core CPU machine the wavelet denoiser took 2.8 ms per
image without and 1.0 ms with :func:`keep_freed_memory` (blocks of 8 images at 224², one thread);
``tests/test_runtime.py`` checks that the faults go down. Measured there (2026-12-04): glibc's own
dynamic ``mmap`` threshold reaches the same reuse by itself after two to four calls with the same
block sizes, so the setting saves the faults of those first calls (about 9 400 per 32-image call)
and of any call whose sizes glibc has not seen yet. PyTorch's own CPU tuning guide recommends
jemalloc or tcmalloc for the same reason; this is the same remedy without preloading a library: raise both thresholds, so freed
blocks stay in the heap and are reused.

The cost: memory freed by the process is kept for reuse instead of being returned to the system
(the resident size stays near its peak). Set ``PD_MALLOC_TUNING=0`` to leave glibc's defaults.
Nothing here changes any result, only where memory comes from.

Why idle threads should sleep (:func:`wait_passively`): PyTorch's CPU wheels run intra-op work on
GNU OpenMP, whose threads *spin* at the end of each parallel region, waiting for the next one. On a
machine with as many threads as cores that is fastest only while nothing else wants a core. The app
never has the cores to itself (Streamlit's web server, other visitors' sessions, the warm-ups, and on
a laptop the browser), and with one core taken each parallel region waits for a thread that is not
running. Measured on this project's 2-core machine, the app's story (``attack_and_defend``, FGSM,
Ens-10; ``python bench/bench_app.py``): the page's stated compute 1.5-6.4 s with two spinning
threads, 0.7-1.2 s with ``OMP_WAIT_POLICY=PASSIVE`` and 0.6-0.9 s with one thread, same host, same
hour; directly in one process beside a busy core, 0.9-1.6 s against 0.55-0.62 s. Passive waiting
keeps every core for a machine that is quiet; its cost on a quiet machine was not measured (this
host never was quiet). It must be in the
environment before torch is imported (libgomp reads it when it is loaded), so the app and the command
line call it first thing; ``OMP_WAIT_POLICY=ACTIVE`` in the environment wins.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["configure_from_env", "keep_freed_memory", "set_threads_from_env", "wait_passively"]

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Upper bound we ask for; glibc versions that cap it lower (32 MiB) clamp it themselves.
_MMAP_THRESHOLD_MAX = 1 << 30

_tuned: bool | None = None


def keep_freed_memory(mmap_threshold: int = _MMAP_THRESHOLD_MAX, trim_threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed blocks for reuse (see the module docstring).

    Parameters
    ----------
    mmap_threshold : bytes; blocks at least this large are still served by ``mmap`` (default
        1 GiB, so a whole batch of 224² images stays in the heap). Fixing it also stops glibc's
        own adjustment of it.
    trim_threshold : bytes of free memory at the top of the heap kept before any is returned.

    Returns
    -------
    bool
        True when glibc accepted both settings; False elsewhere (macOS, Windows, musl), where
        nothing is changed. Calling it again returns the first answer and does nothing.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_threshold = int(min(max(mmap_threshold, 0), _MMAP_THRESHOLD_MAX))
    trim_threshold = int(min(max(trim_threshold, 0), 2**31 - 1))
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _tuned


def wait_passively() -> bool:
    """Let OpenMP's idle threads sleep instead of spinning (module docstring), unless the
    environment already sets ``OMP_WAIT_POLICY``. True when it takes effect: torch not yet imported
    and no policy given."""
    if "torch" in sys.modules or os.environ.get("OMP_WAIT_POLICY"):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def set_threads_from_env() -> None:
    """Honour ``PD_THREADS`` for CPU inference (benchmarks and CI pin it)."""
    import torch

    n = os.environ.get("PD_THREADS")
    if n:
        torch.set_num_threads(int(n))


def configure_from_env() -> None:
    """The settings every entry point applies: ``PD_THREADS`` and, unless ``PD_MALLOC_TUNING=0``,
    :func:`keep_freed_memory`."""
    set_threads_from_env()
    if os.environ.get("PD_MALLOC_TUNING", "1").strip() not in ("0", "false", "no", "off"):
        keep_freed_memory()
