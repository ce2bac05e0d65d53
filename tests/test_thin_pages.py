"""Pages stay thin (issue 19 item 7): no page script and no function of pages/ or ui/ over about 60
lines of code, and every page calls the model only through ``run_heavy`` (no direct forward pass).

Lines of long plain-language text (string literals) do not count: a page may explain at length.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 60
FILES = sorted([*(ROOT / "pages").glob("*.py"), *(ROOT / "ui").glob("*.py")])

# Known debts, each named with what is long; strict: the marker must go once the code is split.
KNOWN_LONG: dict[str, str] = {}
KNOWN_DIRECT: dict[str, str] = {}


def _marked(name: str, known: dict):
    reason = known.get(name)
    return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason)) if reason else name


def _code_lines(nodes, source_lines: list[str]) -> int:
    """Lines covered by ``nodes``, less those inside string literals of three lines or more."""
    covered: set[int] = set()
    text: set[int] = set()
    for node in nodes:
        covered.update(range(node.lineno, node.end_lineno + 1))
        for inner in ast.walk(node):
            if isinstance(inner, ast.Constant) and isinstance(inner.value, str) and \
                    inner.end_lineno - inner.lineno >= 2:
                text.update(range(inner.lineno + 1, inner.end_lineno + 1))
    return len(covered - text)


def _long_parts(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    found = []
    script = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))
              and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    if path.parent.name == "pages" and _code_lines(script, lines) > LIMIT:
        found.append(f"the page script ({_code_lines(script, lines)} lines)")
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                                     and isinstance(node.body[0].value, ast.Constant)) else node.body
            size = _code_lines(body, lines)
            if size > LIMIT:
                found.append(f"{node.name} ({size} lines)")
    return found


@pytest.mark.parametrize("name", [_marked(f"{p.parent.name}/{p.name}", KNOWN_LONG) for p in FILES])
def test_no_long_page_code(name):
    path = ROOT / name
    assert not _long_parts(path), f"{name}: split {_long_parts(path)} into ui/ functions"


def test_the_checker_sees_a_long_function(tmp_path):
    page = tmp_path / "pages" / "long.py"
    page.parent.mkdir()
    page.write_text("def f():\n" + "    x = 1\n" * 61 + "\n\nLONG = '''\n" + "text\n" * 100 + "'''\n")
    assert _long_parts(page) == ["f (61 lines)"]


@pytest.mark.parametrize("name", [_marked(p.name, KNOWN_DIRECT) for p in sorted((ROOT / "pages").glob("*.py"))])
def test_pages_call_the_model_only_through_run_heavy(name):
    """A page never runs a forward pass itself (``model(...)``, ``torch.no_grad``): heavy work goes
    through ``ui.compute.run_heavy``, the device queue with plain-language errors."""
    path = ROOT / "pages" / name
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id == "model"]
    grads = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("no_grad", "inference_mode")]
    assert not calls and not grads, f"{path.name} runs the model outside run_heavy"
