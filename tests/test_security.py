"""Security invariants of the hosted app (issue 7, item 3), checked on the source itself.

* No deserialisation or evaluation that could run code from data: ``torch.load`` only with
  ``weights_only=True``; no pickle/dill/marshal/shelve, ``pandas.read_pickle``,
  ``numpy.load(allow_pickle=True)``, ``yaml.load``/``unsafe_load``/``full_load``, ``eval``, ``exec``,
  ``torch.hub.load`` (downloads and runs code), ``os.system``/``os.popen``, ``shell=True``.
  The check walks the syntax tree (comments and docstrings are ignored, ``model.eval()`` is not
  ``eval``), and the scanner is itself tested on planted examples so this test can fail.
* ``.streamlit/config.toml`` keeps XSRF protection on, limits uploads to what
  :mod:`pd_core.images` accepts anyway, and never shows tracebacks to visitors.
* Paths: the refusal of paths outside the configured image root is tested where it is written,
  in the images engineer's tests of ``pd_core.images.safe_resolve`` (see tests/test_images*.py);
  here only a smoke check that it refuses the classic escapes, so this file fails if it ever
  stops doing so.
"""
from __future__ import annotations

import ast
import math
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ["pd_core", "ui", "pages"]
SOURCE_FILES = ["app.py"]

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
FORBIDDEN_BUILTINS = {"eval", "exec"}
# Fully qualified call names (after resolving ``import x as y``) that are never acceptable.
FORBIDDEN_CALLS = {
    "yaml.load": "use yaml.safe_load",
    "yaml.unsafe_load": "use yaml.safe_load",
    "yaml.full_load": "use yaml.safe_load",
    "pandas.read_pickle": "pickle runs code from the file",
    "joblib.load": "joblib files are pickles",
    "torch.hub.load": "downloads and runs repository code",
    "os.system": "shell command",
    "os.popen": "shell command",
}


def _source_files() -> list[Path]:
    files = [ROOT / f for f in SOURCE_FILES if (ROOT / f).is_file()]
    for d in SOURCE_DIRS:
        if (ROOT / d).is_dir():
            files += sorted((ROOT / d).rglob("*.py"))
    return files


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, with the first part resolved through imports."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan(source: str, filename: str = "<string>") -> list[str]:
    """Every unsafe construct in ``source``, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    problems: list[str] = []

    def report(node, what):
        problems.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in FORBIDDEN_MODULES:
                    report(node, f"imports {a.name} (deserialising it can run code)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                report(node, f"imports from {node.module} (deserialising it can run code)")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        if isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_BUILTINS \
                and node.func.id not in aliases:
            report(node, f"calls {node.func.id}()")
            continue
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        if name == "torch.load" and not _is_true(keywords.get("weights_only")):
            report(node, "torch.load without weights_only=True")
        elif name in ("numpy.load", "np.load") and _is_true(keywords.get("allow_pickle")):
            report(node, "numpy.load with allow_pickle=True")
        elif name in FORBIDDEN_CALLS or name.replace("pd.", "pandas.", 1) in FORBIDDEN_CALLS:
            report(node, f"calls {name} ({FORBIDDEN_CALLS.get(name) or FORBIDDEN_CALLS.get(name.replace('pd.', 'pandas.', 1))})")
        elif name.startswith("subprocess.") and _is_true(keywords.get("shell")):
            report(node, f"{name} with shell=True")
    return problems


# --- the scanner finds what it must, and nothing else ------------------------------------------

PLANTED = {
    "import torch\nstate = torch.load(path)\n": "weights_only",
    "import torch\nstate = torch.load(path, weights_only=False)\n": "weights_only",
    "from torch import load\nstate = load(path)\n": "weights_only",
    "import pickle\n": "pickle",
    "from pickle import loads\n": "pickle",
    "import dill as d\n": "dill",
    "value = eval(text)\n": "eval",
    "exec(code)\n": "exec",
    "import yaml\ncfg = yaml.load(open(p))\n": "yaml.load",
    "import yaml as y\ncfg = y.unsafe_load(s)\n": "yaml.unsafe_load",
    "import pandas as pd\ndf = pd.read_pickle(p)\n": "read_pickle",
    "import numpy as np\na = np.load(p, allow_pickle=True)\n": "allow_pickle",
    "import subprocess\nsubprocess.run(cmd, shell=True)\n": "shell=True",
    "import os\nos.system(cmd)\n": "os.system",
    "import torch\nm = torch.hub.load('a/b', 'c')\n": "torch.hub.load",
}

CLEAN = """
import torch, yaml, numpy as np, subprocess
state = torch.load(path, map_location="cpu", weights_only=True)
model.eval()            # a method, not the builtin
cfg = yaml.safe_load(text)
a = np.load(p)
subprocess.run(["streamlit", "run", "app.py"])
'''eval(x) and pickle.load in a docstring are fine'''
# exec(code) in a comment is fine
"""


@pytest.mark.parametrize("snippet,needle", list(PLANTED.items()))
def test_scanner_finds_planted_problem(snippet, needle):
    problems = scan(snippet)
    assert len(problems) == 1 and needle in problems[0], problems


def test_scanner_accepts_safe_code():
    assert scan(CLEAN) == []


# --- the project's source ----------------------------------------------------------------------

def test_source_has_no_unsafe_deserialisation_or_eval():
    files = _source_files()
    assert any(f.parent.name == "pd_core" for f in files)  # the walk did find the library
    problems = []
    for f in files:
        problems += scan(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))
    assert problems == [], "\n".join(problems)


def test_every_torch_load_in_the_library_is_weights_only():
    # A direct count as well, so a refactoring of the scanner cannot silently hide models.py.
    text = (ROOT / "pd_core" / "models.py").read_text(encoding="utf-8")
    calls = [c for c in ast.walk(ast.parse(text)) if isinstance(c, ast.Call)
             and _dotted(c.func, {}) == "torch.load"]
    assert calls, "models.py loads its weights with torch.load"
    assert all(_is_true({k.arg: k.value for k in c.keywords}.get("weights_only")) for c in calls)


# --- Streamlit server configuration ------------------------------------------------------------

def _config() -> dict:
    path = ROOT / ".streamlit" / "config.toml"
    assert path.is_file(), ".streamlit/config.toml is missing: the hosted app needs XSRF and an upload limit"
    with path.open("rb") as fh:
        return tomllib.load(fh)


def test_xsrf_protection_is_on():
    server = _config().get("server", {})
    assert server.get("enableXsrfProtection") is True
    # Turning CORS protection off makes Streamlit accept websockets from any origin.
    assert server.get("enableCORS", True) is True


def test_upload_limit_matches_the_image_reader():
    from pd_core import images

    limit_mb = _config().get("server", {}).get("maxUploadSize")
    assert isinstance(limit_mb, int) and limit_mb >= 1, "server.maxUploadSize must be set (megabytes)"
    # Streamlit's megabyte is 1024*1024 bytes; anything larger than the reader accepts only
    # wastes memory and bandwidth before the reader refuses it.
    assert limit_mb <= math.ceil(images.MAX_BYTES / (1024 * 1024)), (limit_mb, images.MAX_BYTES)
    assert _config().get("server", {}).get("maxMessageSize", 200) >= limit_mb


def test_visitors_never_see_tracebacks():
    details = _config().get("client", {}).get("showErrorDetails")
    # "full" and "stacktrace" (and the deprecated True/False) print tracebacks in the browser.
    assert details in ("none", "type"), details


def test_no_telemetry_and_no_static_file_serving():
    config = _config()
    assert config.get("browser", {}).get("gatherUsageStats") is False  # no network from the server
    assert config.get("server", {}).get("enableStaticServing", False) is False


# --- paths -------------------------------------------------------------------------------------

def test_safe_resolve_refuses_escapes(tmp_path):
    from pd_core.images import PathError, safe_resolve

    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("s")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    assert safe_resolve(root, "sub/a.jpg") == (root / "sub" / "a.jpg").resolve()
    for escape in ["../secret.txt", "sub/../../secret.txt", str(tmp_path / "secret.txt"), "/etc/passwd",
                   "link", "..", "sub/\x00a.jpg"]:
        with pytest.raises(PathError) as info:
            safe_resolve(root, escape)
        # The message is for the user and must not reveal where the server keeps its files.
        assert str(tmp_path) not in str(info.value), str(info.value)


# --- other uploads -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", ["inf", "-inf", "nan", "1e999", "x"])
def test_results_csv_upload_with_absurd_numbers_is_a_plain_error(n):
    """The Adaptive attack page accepts a CSV upload; hostile numbers must give its one-sentence message."""
    import io

    from pd_core.adaptive import read_adaptive_csv

    data = f"eps_255,defence,n,accuracy,ci_low,ci_high\n4,none,{n},0.5,0.1,0.9\n".encode()
    with pytest.raises(ValueError, match="cannot be read"):
        read_adaptive_csv(io.BytesIO(data))
