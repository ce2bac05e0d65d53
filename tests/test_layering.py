"""The library's layering, read from the source (AST), so that a shortcut fails here and not in review.

- No import cycles among ``pd_core``'s modules, counting imports inside functions too (a
  function-level import hides a cycle from Python but not from the reader).
- Nothing in ``pd_core`` outside ``pd_core/cli/`` imports ``pd_core.cli`` (the library never
  imports its front end), and nothing in ``pd_core`` imports Streamlit.
- Names another module uses are public: a private name (``_x``) imported from, or read as an
  attribute of, another module is allowed only where :data:`ALLOWED_PRIVATE` gives the reason.
- No re-export shims: a name imported into a module and listed in its ``__all__`` must be a
  package's public API (an ``__init__``), never a module passing on another module's names.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pd_core"

#: (importing module, imported module, name) -> why it is allowed to cross.
ALLOWED_PRIVATE: dict[tuple[str, str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(current: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str, path: Path, modules: dict[str, Path]):
    """(target module, imported names, node) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, is_package, node.module, node.level)
            names = tuple(a.name for a in node.names)
            # ``from pkg import submodule`` is an import of the submodule
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for sub in subs:
                yield sub, (), node
            rest = tuple(n for n in names if f"{target}.{n}" not in modules)
            if rest or not subs:
                yield target, rest, node


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in _imports(name, path, modules):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_the_library():
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles (imports inside functions count): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_library_never_imports_its_front_ends():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        for target, _, node in _imports(name, path, modules):
            if target.split(".")[0] == "streamlit":
                offenders.append(f"{name}:{node.lineno} imports streamlit")
            front_end = name.startswith("pd_core.cli") or name == "pd_core.__main__"  # ``python -m pd_core``
            if (target == "pd_core.cli" or target.startswith("pd_core.cli.")) and not front_end:
                offenders.append(f"{name}:{node.lineno} imports {target}")
    assert offenders == []


def test_private_names_stay_inside_their_module():
    modules = _modules()
    crossings = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_aliases = {}
        for target, names, node in _imports(name, path, modules):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target != name and target.startswith("pd_core"):
                    crossings.append((name, target, n, node.lineno))
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    full = f"{target}.{a.name}" if f"{target}.{a.name}" in modules else None
                    if full:
                        module_aliases[a.asname or a.name] = full
            else:
                for a in node.names:
                    if a.name in modules:
                        module_aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                crossings.append((name, module_aliases[node.value.id], node.attr, node.lineno))
    unexplained = [c for c in crossings if c[:3] not in ALLOWED_PRIVATE]
    assert unexplained == [], "private names used across modules: " + ", ".join(
        f"{a}:{line} uses {b}.{n}" for a, b, n, line in unexplained)
    assert len(ALLOWED_PRIVATE) <= 5, "at most a handful of private names may cross modules, each with a reason"


def test_no_module_re_exports_another_modules_names():
    """A plain module's ``__all__`` lists what it defines; only a package ``__init__`` gathers its
    submodules' public names for its users."""
    modules = _modules()
    shims = []
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exported = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                exported = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
        imported = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                imported |= {a.asname or a.name for a in node.names}
        shims += [f"{name} re-exports {n}" for n in sorted(exported & imported)]
    assert shims == []
