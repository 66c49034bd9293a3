"""The package's import graph: one direction, no cycles, no hidden imports."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.join(ROOT, "particleflow")
KERNELS = os.path.join(ROOT, "kernels")
# optional dependencies imported where they are used (allowed inside functions)
OPTIONAL = {"matplotlib", "cupy", "numba.cuda", "scipy.integrate", "arviz", "mpi4py", "tomllib"}


def modules():
    """module name -> file path for particleflow (kernels/ is particleflow.kernels)."""
    out = {}
    for base, prefix in ((PKG, "particleflow"), (KERNELS, "particleflow.kernels")):
        for dirpath, _, files in os.walk(base):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), base)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join([prefix] + rel)] = os.path.join(dirpath, f)
    return out


def resolve(module, is_pkg, node, names):
    """Absolute targets of an import statement inside ``module``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module if is_pkg else module.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        base = base.rsplit(".", 1)[0]
    target = (base + "." + node.module) if node.module and node.level else (node.module if not node.level else base)
    out = []
    for a in node.names:
        sub = f"{target}.{a.name}"
        out.append(sub if sub in names else target)
    return out


def string_imports(module, is_pkg, tree, names):
    """Targets of ``importlib.import_module(...)`` and ``__import__(...)`` calls whose
    module name is a constant or an f-string: ``{__name__}`` stands for the module's
    own name; any other placeholder for every module whose name fits (so a discovery
    loop over a package's children counts as importing each of them)."""
    out = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
        if name not in ("import_module", "__import__"):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            pattern = [arg.value]
        elif isinstance(arg, ast.JoinedStr):
            pattern = []
            for part in arg.values:
                if isinstance(part, ast.Constant):
                    pattern.append(part.value)
                elif isinstance(part.value, ast.Name) and part.value.id == "__name__":
                    pattern.append(module)
                else:
                    pattern.append(None)           # any name part
        else:
            continue
        if len(pattern) == 1 and pattern[0] is not None and pattern[0].startswith("."):
            pattern = [(module if is_pkg else module.rsplit(".", 1)[0]) + pattern[0]]
        for target in names:
            if _fits(pattern, target):
                out.add(target)
    return out


def _fits(pattern, name):
    import re
    rx = "".join("[A-Za-z0-9_]+" if p is None else re.escape(p) for p in pattern)
    return re.fullmatch(rx, name) is not None


def graph():
    mods = modules()
    edges, inner = {}, []
    for m, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        tree = ast.parse(open(path).read(), path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                ts = [t for t in resolve(m, is_pkg, node, mods) if t.startswith("particleflow")]
                targets.update(t for t in ts if t in mods and t != m)
        targets.update(t for t in string_imports(m, is_pkg, tree, mods) if t != m)
        edges[m] = targets
        # imports of the package's own modules inside functions
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        ts = resolve(m, is_pkg, node, mods)
                        own = [t for t in ts if t.startswith("particleflow")]
                        if own:
                            inner.append(f"{m}:{node.lineno} imports {own}")
    return edges, inner


def find_cycle(edges):
    """A cycle among non-package modules' edges (package __init__ files re-export
    their children, so edges into a package from its own children are re-exports)."""
    color, stack = {}, []

    def visit(n):
        color[n] = 1
        stack.append(n)
        for t in sorted(edges.get(n, ())):
            if t != "particleflow" and n.startswith(t + "."):
                continue        # a module importing its own parent package's names
            if color.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if color.get(t) is None:
                c = visit(t)
                if c:
                    return c
        stack.pop()
        color[n] = 2
        return None
    for n in sorted(edges):
        if n != "particleflow" and color.get(n) is None:
            c = visit(n)
            if c:
                return c
    return None


def test_import_graph_has_no_cycles():
    edges, _ = graph()
    edges.pop("particleflow", None)            # the top level imports everything, nothing imports it
    for m in edges:
        assert "particleflow" not in edges[m], f"{m} imports the package's top level"
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


# function-level imports of the package's own modules, each with its reason
ALLOWED_INNER = {"particleflow._main": "the entry point guards the CLI's heavy imports against Ctrl-C"}


def test_no_function_level_imports_of_own_modules():
    _, inner = graph()
    inner = [line for line in inner if line.split(":")[0] not in ALLOWED_INNER]
    assert inner == [], "\n".join(inner)


@pytest.mark.parametrize("low,high", [
    ("particleflow.kernels", "particleflow.energies"), ("particleflow.energies", "particleflow.moves"),
    ("particleflow.moves", "particleflow.simulation"), ("particleflow.io", "particleflow.runner"),
    ("particleflow.io", "particleflow.experiments"), ("particleflow.io", "particleflow.analysis"),
    ("particleflow.analysis", "particleflow.experiments"),
    ("particleflow.simulation", "particleflow.experiments"), ("particleflow.estimators", "particleflow.experiments"),
    ("particleflow.experiments", "particleflow.runner"), ("particleflow.runner", "particleflow.cli"),
])
def test_layers_import_downward_only(low, high):
    edges, _ = graph()
    bad = [f"{m} -> {t}" for m, ts in edges.items() if m == low or m.startswith(low + ".")
           for t in ts if t == high or t.startswith(high + ".")]
    assert not bad, bad


def test_cycle_finder_catches_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_string_imports_are_edges_of_the_graph():
    """``importlib.import_module`` and ``__import__`` of the package's own modules count
    as imports (an upward import by string would otherwise pass unseen)."""
    names = {"particleflow.io", "particleflow.experiments", "particleflow.experiments.deen"}
    tree = ast.parse('import importlib\nimportlib.import_module("particleflow.experiments")\n'
                     '__import__("particleflow.io")\nimportlib.import_module(f"{__name__}.deen")\n')
    assert string_imports("particleflow.experiments", True, tree, names) == names
    edges, _ = graph()
    assert "particleflow.experiments.deen" in edges["particleflow.experiments"]     # the discovery loop


# the modules that hold the CPU fast paths of moves and energies: the only ones that
# may ask where an array lives
FAST_PATH_MODULES = {"moves/fastpaths.py", "energies/mlp_cpu.py", "energies/convnet_cpu.py",
                     "energies/layers_cpu.py", "energies/f1_cpu.py", "energies/chunks.py"}


def test_only_fast_path_modules_choose_an_implementation():
    """No move or energy outside the fast-path modules branches on the array type
    (``on_host``) or carries an implementation switch (``fused = ...``, ``path=``)."""
    offenders = []
    for sub in ("moves", "energies"):
        for f in sorted(os.listdir(os.path.join(PKG, sub))):
            rel = f"{sub}/{f}"
            if not f.endswith(".py") or rel in FAST_PATH_MODULES:
                continue
            with open(os.path.join(PKG, sub, f)) as fh:
                for i, line in enumerate(fh, 1):
                    if "on_host" in line or "fused = " in line or "path=" in line:
                        offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    for rel in FAST_PATH_MODULES:
        assert os.path.exists(os.path.join(PKG, rel)), rel
