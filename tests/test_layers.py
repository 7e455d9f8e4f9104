"""The package's layers import one way: nothing imports a layer above its own, and nothing
closes an import cycle, counting every import at any depth of the code (inside functions,
under ``TYPE_CHECKING``, everywhere).

Data flows ``shm -> stats -> format -> writer -> api -> tools``; ``wire`` (the
cross-process formats), ``errors`` and ``_version`` sit below all of them, and the package's
``__init__``/``__main__`` above.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "shmlog"

# Bottom first.  A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("shmlog._version", "shmlog.wire", "shmlog.errors")),
    ("shm", ("shmlog.shm",)),
    ("stats", ("shmlog.stats",)),
    ("format", ("shmlog.format",)),
    ("writer", ("shmlog.writer",)),
    ("api", ("shmlog.api",)),
    ("tools", ("shmlog.tools", "shmlog.mmengine", "shmlog.exporters")),
    ("package", ("shmlog",)),
]


def modules_of(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the package ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> int:
    best, depth = None, -1
    for index, (_name, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    if best is None:
        raise AssertionError(f"module {module} is in no layer; add it to LAYERS")
    return best


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported package module, line) for every import in ``path``, at any depth."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod when there is one.
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import shmlog.x.y`` -> shmlog.x.y
                target = target.rpartition(".")[0]
            if target and target != module:
                found.append((target, node.lineno))
    return found


def problems(root: Path, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> list[str]:
    """Every upward import and every import cycle under the package ``root``."""
    modules = modules_of(root)
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    found = []
    for module, path in modules.items():
        here = layer_of(module, layers)
        for target, line in imports_of(module, path, known):
            graph[module].add(target)
            there = layer_of(target, layers)
            if there > here:
                found.append(
                    f"{path.relative_to(root.parent)}:{line}: {module} (layer "
                    f"{layers[here][0]!r}) imports {target} from the layer above, "
                    f"{layers[there][0]!r}"
                )
    found.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected group of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, set(group)) for group in groups]


def _closed_path(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    start = min(group)
    path, seen = [start], {start}
    node = start
    while True:
        nxt = min(t for t in graph[node] if t in group)
        path.append(nxt)
        if nxt in seen:
            return path[path.index(nxt):]
        seen.add(nxt)
        node = nxt


def test_no_module_imports_a_layer_above_its_own_or_closes_a_cycle() -> None:
    found = problems(PACKAGE)
    assert not found, "\n".join(["the layers are broken:", *found])


def test_every_module_belongs_to_a_layer() -> None:
    for module in modules_of(PACKAGE):
        layer_of(module)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "shmlog"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_check_finds_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "shm/__init__.py": "",
        "shm/ring.py": "def f():\n    from ..api.session import init\n",
        "api/__init__.py": "",
        "api/session.py": "from ..shm import ring\n",
    })
    found = problems(root)
    assert found[0] == (
        "shmlog/shm/ring.py:2: shmlog.shm.ring (layer 'shm') imports shmlog.api.session "
        "from the layer above, 'api'"
    )
    assert found[1] == "import cycle: shmlog.api.session -> shmlog.shm.ring -> shmlog.api.session"


def test_the_check_finds_a_cycle_inside_one_layer(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "api/__init__.py": "",
        "api/a.py": "from . import b\n",
        "api/b.py": "import shmlog.api.c\n",
        "api/c.py": "from .a import x\n",
    })
    assert problems(root) == ["import cycle: shmlog.api.a -> shmlog.api.b -> shmlog.api.c -> "
                              "shmlog.api.a"]


@pytest.mark.timeout(60)
def test_import_shmlog_loads_neither_the_log_writer_nor_filelock() -> None:
    """What every DataLoader worker pays for ``import shmlog``: no writer, no file lock."""
    code = ("import shmlog, sys; print(sorted(m for m in sys.modules "
            "if m.startswith(('shmlog.writer', 'shmlog.tools', 'filelock'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
