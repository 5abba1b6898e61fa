"""The layering of pnn, checked on the source: which module may import which.

* The command line (``pnn/cli/``) imports the library; nothing in the library imports it (only
  ``pnn/__main__.py``, the program's entry point, does), and no ``argparse`` namespace travels
  outside it.
* No import cycle among pnn's modules, counting imports inside functions too.
* The protocol (``pnn.layer``, ``pnn.cost``, ``pnn.config``) imports nothing else of pnn; the
  building blocks (every other module: network, perturbations, layers, data, files, fits,
  simulators, drivers) import no trainer, registry or runner; the records and trainers import
  no runner.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: installed names of the three source folders (pyproject's package-dir)
FOLDERS = {"pnn": "pnn", "sim": "pnn.sim", "drivers": "pnn.drivers"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, prefix in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((prefix, *parts)) if parts else prefix] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The pnn module an imported name lives in (``pnn.cli.common.x`` -> ``pnn.cli.common``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> dict[str, set[str]]:
    """``{imported pnn module: {"top", "local"}}`` of one module (every import statement)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    local_nodes = {id(n) for f in ast.walk(tree)
                   if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    out: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            # ``from pkg import submodule`` imports the submodule (a package's own __init__
            # runs for any of its submodules and is not counted as an edge)
            subs = [f"{base}.{a.name}" for a in node.names]
            names = subs if all(n in MODULES for n in subs) else [*subs, base]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"pnn(\.\w+)+:\w+", node.value):
            # "pnn.sim.acoustic:AcousticLayer": imported when first used (registry._resolve)
            names = [node.value.partition(":")[0]]
            local_nodes.add(id(node))
        for name in names:
            owner = _owner(name)
            if owner is not None and owner != module:
                out.setdefault(owner, set()).add("local" if id(node) in local_nodes else "top")
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_library_never_imports_the_command_line():
    offenders = {m: sorted(t for t in deps if t == "pnn.cli" or t.startswith("pnn.cli."))
                 for m, deps in GRAPH.items()
                 if not (m == "pnn.cli" or m.startswith("pnn.cli.")) and m != "pnn.__main__"}
    assert not {m: t for m, t in offenders.items() if t}


def test_no_argparse_outside_the_command_line():
    for module, path in MODULES.items():
        if module == "pnn.cli" or module.startswith("pnn.cli."):
            continue
        text = path.read_text()
        for word in ("import argparse", "Namespace("):
            assert word not in text, f"{path.relative_to(ROOT)}: {word}"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


PROTOCOL = {"pnn.layer", "pnn.cost", "pnn.config"}
#: pnn.figures draws what the runners report, with the records' display names and colours;
#: pnn.report_* are the pieces of pnn.report (records, sections, figures)
RUNNERS = ("pnn.experiment", "pnn.compare", "pnn.tune", "pnn.adapt", "pnn.report",
           "pnn.report_records", "pnn.report_sections", "pnn.report_figures",
           "pnn.characterize", "pnn.cli", "pnn.figures")
RECORDS_AND_TRAINERS = ("pnn.registry", "pnn.model_io", "pnn.train")
#: the emulators are virtual instruments built from a registered system by name: they sit
#: with the runners, above the registry, although they live in drivers/
ABOVE_THE_REGISTRY = {"pnn.drivers.emulator"}


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_protocol_and_the_building_blocks_stay_low():
    for module in PROTOCOL:
        assert set(GRAPH[module]) <= PROTOCOL, (module, sorted(GRAPH[module]))
    blocks = [m for m in GRAPH if not _within(m, (*RUNNERS, *RECORDS_AND_TRAINERS))
              and m not in PROTOCOL and m not in ABOVE_THE_REGISTRY
              and m not in ("pnn", "pnn.__main__")]
    assert {"pnn.network", "pnn.layers", "pnn.sim.acoustic", "pnn.drivers.visa",
            "pnn.data.vowels"} <= set(blocks)
    for module in blocks:
        bad = [t for t in GRAPH[module] if _within(t, (*RUNNERS, *RECORDS_AND_TRAINERS))]
        assert not bad, (module, bad)


def test_records_and_trainers_import_no_runner():
    for module in GRAPH:
        if _within(module, RECORDS_AND_TRAINERS):
            bad = [t for t in GRAPH[module] if _within(t, RUNNERS)]
            assert not bad, (module, bad)


def test_help_does_not_load_jax():
    """``pnn --help`` builds every sub-command's parser without importing JAX (it used to
    take seconds); checked on the modules loaded, not on a clock."""
    code = ("import sys; from pnn.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('jax', 'equinox', 'optax', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _sizes():
    """(module, lines) over 700, (function, lines) over 80 and every function-local import
    (``where:line``) of pnn, sim and drivers outside the command line and the firmware (which
    runs on a microcontroller, importing what the board offers)."""
    long_modules, long_functions, local = [], [], []
    for module, path in MODULES.items():
        if module.startswith("pnn.cli") or "firmware" in path.parts:
            continue
        text = path.read_text()
        if len(text.splitlines()) > 700:
            long_modules.append((module, len(text.splitlines())))
        seen = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append((f"{module}.{node.name}",
                                           node.end_lineno - node.lineno + 1))
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)) and id(sub) not in seen:
                        seen.add(id(sub))
                        local.append(f"{module}:{sub.lineno}")
    return long_modules, long_functions, local


def test_modules_and_functions_stay_small_and_imports_stay_at_the_top():
    """No module over 700 lines, no function over 80, and fewer than 30 imports inside
    functions (each of those left loads an optional or slow dependency on demand, with a
    comment saying so): what a reader meets stays small enough to hold in mind."""
    long_modules, long_functions, local = _sizes()
    assert not long_modules, f"modules over 700 lines (split by responsibility): {long_modules}"
    assert not long_functions, f"functions over 80 lines (name their steps): {long_functions}"
    assert len(local) < 30, f"{len(local)} function-local imports (move them to the top): {local}"
