"""Two simultaneous browser sessions on the real app each get their own photo's result (issue 7).

Runs ``bench/load_test.py -n 2`` (loopback only, bounded in time); the 8-session version is run
by hand, see the script's docstring. Marked ``browser`` and ``slow``: deselect with
``-m "not browser"``.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Chromium at /usr/bin/chromium"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="needs playwright"),
]


def test_two_simultaneous_sessions_get_their_own_results():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "load_test.py"), "-n", "2", "--timeout", "420"],
                          cwd=ROOT, capture_output=True, text=True, timeout=560, env=dict(os.environ))
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "PASS: 2/2 sessions" in report, report
    rows = [line for line in report.splitlines() if line.rstrip().endswith(" ok")]
    assert len(rows) == 2, report
