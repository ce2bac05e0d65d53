"""`pd_core` is a real package (issue 15, item 1).

A wheel is built from a copy of the sources (so the checkout gets no ``build/`` or ``*.egg-info``),
installed into a fresh virtual environment that sees the already installed dependencies (nothing is
fetched), and used from a directory that is not the repository, with ``PYTHONPATH`` cleared, so the
checkout's ``pd_core`` cannot be imported by accident.

The fresh environment sees the dependencies of *the interpreter running the tests*, not those of its
base interpreter: ``venv --system-site-packages`` would give the base interpreter's site-packages,
which inside a virtual environment (the README's set-up) lack torch (issue 21). So the fresh
environment gets a ``.pth`` file that runs ``site.addsitedir`` on each site-packages folder of the
running interpreter (its own ``.pth`` files included), after the fresh environment's own folder:
the wheel's ``pd_core`` comes first.
"""
from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_FILES = ["pyproject.toml", "README.md", "requirements.txt", "requirements-dev.txt"]
# Every subcommand the README documents; `pdlab --help` must list them all.
SUBCOMMANDS = ["models", "defences", "classify", "defend", "attack", "demo", "evaluate", "adaptive", "sweep",
               "dose"]


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env["TORCH_HOME"] = str(tmp / "torch-home")  # an empty hub cache: nothing but the embedded model
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def _site_dirs_of_this_interpreter() -> list[str]:
    """The site-packages folders the running interpreter reads (a virtual environment's own, and its
    base's when it was made with ``--system-site-packages``; the user's when enabled)."""
    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        folders.append(site.getusersitepackages())
    return [f for f in dict.fromkeys(folders) if os.path.isdir(f)]


def _fresh_venv_seeing_these_packages(venv: Path, cwd: Path, env: dict[str, str]) -> None:
    """A virtual environment of the running interpreter that imports what the running interpreter imports."""
    # Without its own pip: the running interpreter's pip (visible through the .pth file) installs
    # into whichever environment runs it.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=cwd, env=env)
    done = _run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=cwd, env=env)
    lines = [f"import site; site.addsitedir({folder!r})" for folder in _site_dirs_of_this_interpreter()]
    (Path(done.stdout.strip()) / "_pd_test_parent_site.pth").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, venv, elsewhere dir, env, source copy) after `pip install <wheel>` into a fresh venv."""
    tmp = tmp_path_factory.mktemp("packaging")
    env = _clean_env(tmp)
    source = tmp / "source"
    shutil.copytree(REPO / "pd_core", source / "pd_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in SOURCE_FILES:
        shutil.copy2(REPO / name, source / name)
    # A data file of a kind pd_core does not hold yet: whatever pd_core reads from its own folder
    # must travel with the wheel, whatever its extension.
    (source / "pd_core" / "packaging-probe.dat").write_bytes(b"probe")
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(dist), str(source)], cwd=tmp, env=env)
    (wheel,) = dist.glob("pixel_deflection_lab-*.whl")

    venv = tmp / "venv"
    _fresh_venv_seeing_these_packages(venv, tmp, env)
    # --ignore-installed: a pd_core installed where the running interpreter looks (pip install -e .)
    # is neither uninstalled nor taken as "already satisfied".
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
          str(wheel)], cwd=tmp, env=env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return wheel, venv, elsewhere, env, source


def test_import_comes_from_the_installed_copy(installed):
    _, venv, elsewhere, env, _ = installed
    done = _run([str(venv / "bin" / "python"), "-c", "import pd_core, os; print(pd_core.__file__)"],
                cwd=elsewhere, env=env)
    location = Path(done.stdout.strip()).resolve()
    assert location.is_relative_to(venv.resolve()), location
    assert not location.is_relative_to(REPO), location


def test_console_script_lists_every_subcommand(installed):
    _, venv, elsewhere, env, _ = installed
    script = venv / "bin" / "pdlab"
    assert script.is_file()
    done = _run([str(script), "--help"], cwd=elsewhere, env=env)
    missing = [name for name in SUBCOMMANDS if name not in done.stdout]
    assert not missing, f"pdlab --help does not list {missing}:\n{done.stdout}"
    # The usage line names the command the user typed (issue 21: it said "python -m pd_core").
    assert done.stdout.startswith("usage: pdlab "), done.stdout[:200]
    module = _run([str(venv / "bin" / "python"), "-m", "pd_core", "--help"], cwd=elsewhere, env=env)
    assert module.stdout.startswith("usage: python -m pd_core "), module.stdout[:200]


def test_console_script_models_runs_from_anywhere(installed):
    _, venv, elsewhere, env, _ = installed
    done = _run([str(venv / "bin" / "pdlab"), "models", "--json"], cwd=elsewhere, env=env)
    import json

    statuses = {row["name"]: row for row in json.loads(done.stdout)}
    assert statuses["efficientnet_lite0"]["available"] is True
    # The hub cache is empty, so the paper's models are unavailable and say how to get them.
    assert statuses["resnet50"]["available"] is False
    assert "pdlab models --download resnet50" in statuses["resnet50"]["reason"]


def test_wheel_holds_pd_core_and_its_data_only(installed):
    wheel, source = installed[0], installed[4]
    names = set(zipfile.ZipFile(wheel).namelist())
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"pd_core"}
    # Compared with the copy the wheel was built from (other work may add files to the checkout).
    expected = {
        path.relative_to(source).as_posix()
        for path in (source / "pd_core").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    missing = sorted(expected - names)
    assert not missing, f"files under pd_core/ left out of the wheel: {missing}"


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()


def _requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-r")]


def _normalise(requirement: str) -> str:
    """Compare requirements ignoring spacing and the order of version clauses."""
    requirement = requirement.split(";")[0].replace(" ", "")
    match = re.match(r"([A-Za-z0-9_.\-\[\]]+)(.*)", requirement)
    name, clauses = match.group(1), match.group(2)
    return name.lower().replace("_", "-") + ",".join(sorted(c for c in clauses.split(",") if c))


def test_dependencies_have_one_source_of_truth(installed):
    metadata = _metadata(installed[0])
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    runtime = sorted(_normalise(r) for r in requires if "extra ==" not in r)
    dev = sorted(_normalise(r) for r in requires if re.search(r"extra == .dev.", r))
    ray = sorted(_normalise(r) for r in requires if re.search(r"extra == .ray.", r))
    assert runtime == sorted(_normalise(r) for r in _requirement_lines(REPO / "requirements.txt"))
    assert dev == sorted(_normalise(r) for r in _requirement_lines(REPO / "requirements-dev.txt"))
    assert [r.split(">")[0] for r in ray] == ["pyarrow", "ray[default]"]
    torch_clause = next(r for r in runtime if r.startswith("torch") and not r.startswith("torchvision"))
    assert "<=2.14.1" in torch_clause  # the version installed on the project machines stays allowed


def test_build_outputs_are_ignored_by_git(tmp_path):
    """`pip install .` and `python -m build` leave build/, dist/ and *.egg-info in the checkout (issue 21)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["build/lib/pd_core/__init__.py", "dist/pixel_deflection_lab-0.1.0-py3-none-any.whl",
             "pixel_deflection_lab.egg-info/PKG-INFO"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert sorted(done.stdout.split()) == sorted(paths), done.stdout + done.stderr
    # ... while the sources stay tracked.
    kept = subprocess.run(["git", "check-ignore", "--no-index", "pd_core/__init__.py", "README.md"], cwd=REPO,
                          capture_output=True, text=True)
    assert kept.stdout == ""


def test_skips_for_want_of_hardware_are_counted_by_their_reason():
    from types import SimpleNamespace

    from conftest import hardware_skips

    def skipped(nodeid, reason, **keywords):
        return SimpleNamespace(nodeid=nodeid, keywords=keywords, longrepr=("file.py", 1, f"Skipped: {reason}"))

    found = hardware_skips([
        skipped("a", "needs a CUDA GPU (run bench/gpu_check.sh on a GPU machine)", gpu=1),
        skipped("b", "needs Playwright and /usr/bin/chromium", browser=1),
        skipped("c", "needs Chromium at /usr/bin/chromium"),
        skipped("d", "runs inside the loopback namespace started by the outer test", gpu=1),  # not hardware
        skipped("e", "needs the project's shared folder beside the checkout (../shared)"),
    ])
    assert found == {"gpu": ["a"], "browser": ["b", "c"]}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a GPU machine the GPU tests run")
def test_pytest_says_loudly_that_gpu_tests_were_skipped():
    """The README's test command on a machine without CUDA ends with the notice (checked on one GPU file)."""
    env = {k: v for k, v in os.environ.items() if k != "PD_GPU_TESTS_ON_CPU"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider",
                           "tests/test_gpu_story.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "skipped for want of hardware" in done.stdout
    assert re.search(r"\d+ GPU TEST\(S\) SKIPPED: no CUDA GPU here", done.stdout), done.stdout[-3000:]


def test_ci_runs_exactly_the_readme_test_command():
    """`.ci/run` runs the README's test command verbatim (the guide's rule), so CI tests what a newcomer runs."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for line in readme.splitlines() if line.strip().endswith("python -m pytest")]
    assert len(commands) == 1, commands
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert commands[0] in ci_lines
