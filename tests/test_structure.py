"""The package's layering, checked from its source: who may import whom, no import cycle, and no
private attribute of the libraries we build on (an upgrade would break it silently)."""
import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "pipeline"
LIBRARIES = ("lightning", "jsonargparse", "argparse")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def imported_modules(name: str) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its code (function-level imports
    too): ``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``."""
    out = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in MODULES:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out - {name}


GRAPH = {name: imported_modules(name) for name in MODULES}


def test_the_graph_sees_imports_at_module_and_function_level():
    assert "pipeline.accelerator" in GRAPH["pipeline.train.runner"]          # module level
    assert "pipeline.tracking" in GRAPH["pipeline.train.runner"]             # inside a function
    assert "pipeline.proxies.az_nas" in GRAPH["pipeline.proxies"]            # `from pkg import module`


def test_no_import_cycle():
    """Depth-first search for a back edge; the cycle found is printed whole."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_the_runner_knows_no_task_and_the_tasks_know_no_runner():
    tasks = ("pipeline.classification", "pipeline.segmentation", "pipeline.search")
    assert not [m for m in GRAPH["pipeline.train.runner"] if m.startswith(tasks)]
    offenders = {name: sorted(m for m in targets if m.startswith("pipeline.train"))
                 for name, targets in GRAPH.items() if name.startswith(tasks[:2])}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_proxy_registry_imports_no_proxy():
    assert GRAPH["pipeline.proxies.registry"] <= {"pipeline.space.spec"}
    families = {"pipeline.proxies.az_nas", "pipeline.proxies.baselines", "pipeline.proxies.lswag",
                "pipeline.proxies.ntk_proxies"}
    assert families <= GRAPH["pipeline.proxies"]


# ------------------------------------------------------------------ private attributes
def own_private_names() -> set[str]:
    """Private names the package defines itself: functions, classes, and attributes it assigns."""
    names = set()
    for tree in TREES.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


# torch's storage identity and dispatch internals, in the latency package (its owner's to replace;
# torch is not one of LIBRARIES).
ALLOWED = {("pipeline/latency/memory.py", "_cdata"), ("pipeline/latency/memory.py", "torch.utils._python_dispatch"),
           ("pipeline/latency/memory.py", "torch.utils._pytree")}


def private_imports() -> list[str]:
    """``from lib._mod import x`` or ``from lib import _x`` of a library (not of the package itself)."""
    found = []
    for name, tree in TREES.items():
        rel = str(MODULES[name].relative_to(REPO))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and not node.module.startswith("pipeline"):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if not a.name.startswith("pipeline")]
            else:
                continue
            for full in names:
                private = [part for part in full.split(".") if part.startswith("_") and not part.startswith("__")]
                if private and (rel, full) not in ALLOWED and (rel, full.rsplit(".", 1)[0]) not in ALLOWED:
                    found.append(f"{rel}:{node.lineno}: {full}")
    return found


def test_no_private_module_or_name_of_a_library_is_imported():
    assert private_imports() == []


def private_accesses_on_other_objects(own: set[str]) -> list[str]:
    found = []
    for name, tree in TREES.items():
        rel = str(MODULES[name].relative_to(REPO))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue   # checked against the library classes below
            if node.attr not in own and (rel, node.attr) not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: .{node.attr}")
    return sorted(found)


def test_no_private_attribute_of_another_objects_class():
    """``x._name`` is fine only for a name the package defines itself (its own helper objects)."""
    assert private_accesses_on_other_objects(own_private_names()) == []


def test_the_private_attribute_check_can_fail():
    tree = ast.parse("def f(parser, cli):\n    parser._option_string_actions.pop('-c')\n    cli._set_seed()\n")
    TREES["pipeline._probe"], MODULES["pipeline._probe"] = tree, PACKAGE / "_probe.py"
    try:
        found = private_accesses_on_other_objects(own_private_names() - {"_set_seed"})
    finally:
        del TREES["pipeline._probe"], MODULES["pipeline._probe"]
    assert found == ["pipeline/_probe.py:2: ._option_string_actions", "pipeline/_probe.py:3: ._set_seed"]


def library_private_names(cls: type) -> set[str]:
    """Private names that the classes of LIBRARIES in ``cls``'s MRO define or set on ``self``."""
    names = set()
    for base in cls.__mro__:
        if base.__module__.split(".")[0] not in LIBRARIES:
            continue
        names |= {n for n in vars(base) if n.startswith("_") and not n.startswith("__")}
        try:
            names |= set(re.findall(r"self\.(_[A-Za-z]\w*)", inspect.getsource(base)))
        except (OSError, TypeError):
            pass
    return {n for n in names if not n.startswith("__")}


def own_names_used_on_self(cls: type) -> set[str]:
    """``self._x`` and ``def _x`` in the package's own classes of ``cls``'s MRO (mixins included)."""
    used = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("pipeline."):
            continue
        tree = ast.parse(inspect.getsource(klass))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                    and node.attr.startswith("_")):
                used.add(node.attr)
            elif isinstance(node, ast.FunctionDef) and node.name.startswith("_") and not node.name.startswith("__"):
                used.add(node.name)
    return used


def library_subclasses() -> list[type]:
    classes = []
    for name in MODULES:
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and obj.__module__ == name
                    and any(b.__module__.split(".")[0] in LIBRARIES for b in obj.__mro__)):
                classes.append(obj)
    return classes


def test_our_subclasses_of_library_classes_touch_none_of_their_private_names():
    """Overriding LightningCLI's ``_set_seed`` or setting a LightningModule's ``_trainer`` would go
    on compiling after an upgrade that renamed them, and silently do nothing."""
    classes = library_subclasses()
    names = {c.__name__ for c in classes}
    assert {"TrainCLI", "ClassificationModule", "SegmentationModule"} <= names   # the check sees them
    clashes = {c.__qualname__: sorted(own_names_used_on_self(c) & library_private_names(c)) for c in classes}
    assert {k: v for k, v in clashes.items() if v} == {}


def test_library_private_names_are_found():
    from lightning.pytorch.cli import LightningCLI

    assert {"_set_seed", "_add_arguments", "_model_class"} <= library_private_names(LightningCLI)
