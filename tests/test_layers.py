"""The package's layers import one way: nothing imports a layer above its own, and nothing
closes an import cycle, counting every import at any depth of the code (inside functions,
under ``TYPE_CHECKING``, everywhere).  And no module reaches into another module's objects
through private names: ``obj._name`` (``obj`` not ``self``/``cls``) is only for names the module
itself defines, and no module imports another's ``_name``.

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
    ("base", ("shmlog._version", "shmlog.wire", "shmlog.errors", "shmlog.forks")),
    ("shm", ("shmlog.shm",)),
    ("stats", ("shmlog.stats",)),
    ("format", ("shmlog.format",)),
    ("writer", ("shmlog.writer",)),
    ("api", ("shmlog.api",)),
    ("tools", ("shmlog.tools", "shmlog.mmengine")),
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


# Private names that are documented parts of the standard library (namedtuple's methods,
# os._exit, sys._getframe): not private to anyone.
PUBLIC_UNDERSCORED = frozenset({"_make", "_replace", "_asdict", "_fields", "_field_defaults",
                                "_exit", "_getframe"})

# (file, private name) -> whose object it is.  Objects of the standard library, MMEngine or
# PyTorch that offer no public way to do what shmlog does with them; none of shmlog's own.
FOREIGN_PRIVATE: dict[tuple[str, str], str] = {
    ("shmlog/api/dataloader.py", "_get_iterator"): "torch's DataLoader, whose iterator is timed",
    ("shmlog/api/dataloader.py", "_dataset_fetcher"): "torch's DataLoader iterator's fetcher",
    ("shmlog/api/logger.py", "_cache"): "logging.Logger's isEnabledFor cache",
    ("shmlog/api/process.py", "_config"): "multiprocessing's process config, which children inherit",
    ("shmlog/mmengine/hub.py", "_log_scalars"): "MMEngine's MessageHub, made to store in a session",
    ("shmlog/mmengine/hub.py", "_runtime_info"): "MMEngine's MessageHub",
    ("shmlog/mmengine/hub.py", "_resumed_keys"): "MMEngine's MessageHub",
    ("shmlog/mmengine/hub.py", "_set_resumed_keys"):
        "MMEngine's MessageHub, whose resumed flags a staged update keeps",
    ("shmlog/mmengine/workers.py", "_instance_dict"): "MMEngine's ManagerMixin registry",
    ("shmlog/stats/portable.py", "_reconstructor"): "copyreg's reconstructor, for pickles MMEngine reads",
    ("shmlog/writer/sinks.py", "_open"): "logging.FileHandler's way to (re)open its stream",
}


def _own_names(tree: ast.AST) -> set[str]:
    """Every name a module defines: functions, classes, module and local names, arguments,
    ``self.x``/``cls.x`` attributes, ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            names.update(c.value for c in ast.walk(node.value)
                         if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return names


def private_access(root: Path, foreign: dict[tuple[str, str], str] | None = None) -> list[str]:
    """Every ``obj._name`` of another module's object, and every import of another's ``_name``."""
    foreign = FOREIGN_PRIVATE if foreign is None else foreign
    found = []
    for module, path in modules_of(root).items():
        where = str(path.relative_to(root.parent))
        tree = ast.parse(path.read_text(), str(path))
        own = _own_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                name = node.attr
                if (not name.startswith("_") or name.startswith("__") or name in own
                        or name in PUBLIC_UNDERSCORED or (where, name) in foreign
                        or (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                    continue
                found.append(
                    f"{where}:{node.lineno}: {module} uses {ast.unparse(node)}, the private "
                    f"name {name!r} of an object it does not define; use a public name (add "
                    f"one to the owner)"
                )
            elif isinstance(node, ast.ImportFrom) and (
                    node.level or (node.module or "").split(".")[0] == root.name):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(
                            f"{where}:{node.lineno}: {module} imports {alias.name!r}, a private "
                            f"name of another module; make it public there"
                        )
    return found


def test_no_module_imports_a_layer_above_its_own_or_closes_a_cycle() -> None:
    found = problems(PACKAGE)
    assert not found, "\n".join(["the layers are broken:", *found])


def test_no_module_uses_another_module_s_private_names() -> None:
    found = private_access(PACKAGE)
    assert not found, "\n".join(["private names are reached across modules:", *found])


def test_every_exemption_from_the_private_name_check_is_still_needed() -> None:
    stale = [f"{where}: {name}" for (where, name) in FOREIGN_PRIVATE
             if private_access(PACKAGE, {k: v for k, v in FOREIGN_PRIVATE.items()
                                         if k != (where, name)}) == []]
    assert not stale, f"FOREIGN_PRIVATE entries no code needs any more: {stale}"


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


def test_the_check_finds_a_private_name_of_another_module_s_object(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "stats/__init__.py": "",
        "stats/buffer.py": """\
            class Buffer:
                def __init__(self):
                    self._storage = []
                    self._name = None

                @classmethod
                def make(cls):
                    return cls._build()

            def _helper():
                pass
            """,
        "api/__init__.py": "",
        "api/hub.py": """\
            from ..stats.buffer import Buffer, _helper

            class Hub:
                def __init__(self):
                    self._own = Buffer()

                def add(self, value):
                    self._own._storage.append(value)
                    return self._own.make()
            """,
    })
    assert private_access(root, {}) == [
        "shmlog/api/hub.py:1: shmlog.api.hub imports '_helper', a private name of another "
        "module; make it public there",
        "shmlog/api/hub.py:8: shmlog.api.hub uses self._own._storage, the private name "
        "'_storage' of an object it does not define; use a public name (add one to the owner)",
    ]
    # The same access, exempted as a foreign object's, is not reported.
    assert private_access(root, {("shmlog/api/hub.py", "_storage"): "x"}) == [
        "shmlog/api/hub.py:1: shmlog.api.hub imports '_helper', a private name of another "
        "module; make it public there",
    ]


@pytest.mark.timeout(60)
def test_import_shmlog_loads_neither_the_log_writer_nor_filelock() -> None:
    """What every DataLoader worker pays for ``import shmlog``: no writer, no file lock."""
    code = ("import shmlog, sys; print(sorted(m for m in sys.modules "
            "if m.startswith(('shmlog.writer', 'shmlog.tools', 'filelock'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
