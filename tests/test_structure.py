"""The package's structure: the command lines are thin layers over a library that never imports
them, and the import graph has no cycle (counting imports inside functions too, so that none
can hide a loop)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sbnn_hdl"

#: The modules behind ``python -m sbnn_hdl.X``: the only ones that may parse arguments and print.
COMMANDS = {"sbnn_hdl.inspect", "sbnn_hdl.infer", "sbnn_hdl.generate", "sbnn_hdl.simulate", "sbnn_hdl.bench",
            "sbnn_hdl.convert", "sbnn_hdl.export", "sbnn_hdl.bitprune", "sbnn_hdl.board.__main__", "sbnn_hdl.train.__main__"}


def _modules():
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = (path, parts[-1] == "__init__")
    return modules


def import_graph():
    """``{module: {modules it imports}}`` within the package, from every import statement."""
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module
                for alias in node.names:
                    if f"{target}.{alias.name}" in modules:
                        edges.add(f"{target}.{alias.name}")  # a submodule: importing it runs it
                    elif target in modules:
                        edges.add(target)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_sees_the_imports_it_should():
    """The graph is right on known edges, so that the checks below can fail."""
    graph = import_graph()
    assert COMMANDS <= graph.keys()
    assert "sbnn_hdl.gateware.verilog" in graph["sbnn_hdl.generate"]
    assert "sbnn_hdl.board.protocol" in graph["sbnn_hdl.board.host"]      # from . import protocol as P
    assert "sbnn_hdl.train.fold" in graph["sbnn_hdl.train.loop"]            # from .fold import ...
    assert "sbnn_hdl.golden" in graph["sbnn_hdl.simulation.rtl"]            # from .. import golden
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "expected no import cycle, found " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(set(import_graph()) - COMMANDS))
def test_library_never_imports_a_command(module):
    reached = import_graph()[module] & COMMANDS
    assert not reached, f"{module}: expected library imports only, found the command module(s) {sorted(reached)}"


def test_commands_are_thin():
    """A command parses its arguments, calls the library and prints: it defines ``main``, and no
    other command builds on it."""
    graph = import_graph()
    modules = _modules()
    for name in COMMANDS:
        tree = ast.parse(modules[name][0].read_text())
        top = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "main" in top, f"{name}: expected a main(argv) function"
        assert not graph[name] & COMMANDS, f"{name}: imports another command"


def _private_names(tree):
    """``(used, defined)``: the private attribute names read as ``x._name`` and the private names
    the module defines (functions, classes, assignments, attributes it assigns)."""
    used, defined = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            (defined if isinstance(node.ctx, ast.Store) else used).add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] != "sbnn_hdl" and node.level == 0:
            used |= {alias.name for alias in node.names if alias.name.startswith("_")}
    return used, defined


def test_no_private_names_of_other_packages():
    """Every ``x._name`` the package reads is a name it defines itself: none of Amaranth's,
    amaranth-boards' or any other library's private names (and no name-mangled ``_Class__attr``
    of another class, read or assigned)."""
    used, defined = set(), set()
    for path, _ in _modules().values():
        u, d = _private_names(ast.parse(path.read_text()))
        used |= u
        defined |= d
    mangled = {name for name in used | defined if name[1:2].isupper() and "__" in name[2:]}
    assert not mangled, f"expected no name-mangled private names of other classes, found {sorted(mangled)}"
    foreign = used - defined
    assert not foreign, f"expected only the package's own private names, found {sorted(foreign)}"


def test_private_name_check_can_fail():
    used, defined = _private_names(ast.parse(
        "from amaranth.back.verilog import _convert_rtlil_text\n"
        "def f(platform):\n    self._MustUse__silence = True\n    return platform._nextpnr_device_options\n"))
    assert {"_convert_rtlil_text", "_nextpnr_device_options"} <= used - defined
    assert "_MustUse__silence" in defined


def test_package_imports_stand_at_the_top():
    """The package's own modules are imported at module level only: an import of one inside a
    function is how an import loop hides (third-party imports may wait until they are needed)."""
    late = []
    for name, (path, _) in _modules().items():
        for func in ast.walk(ast.parse(path.read_text())):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                late += [f"{name}:{node.lineno}" for node in ast.walk(func)
                         if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("sbnn_hdl"))]
    assert not late, f"expected the package's imports at module level, found some in functions at {late}"
