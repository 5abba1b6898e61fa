"""Packaging: a wheel of the repository claims only the import name ``pnn``."""

import configparser
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _source_files() -> list[Path]:
    """The files a fresh clone would have (tracked, plus new files git does not ignore)."""
    if shutil.which("git") and (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                              "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [Path(p) for p in out.decode().split("\0") if p and (ROOT / p).is_file()]
    skip = {".git", ".venv", "build", "experiments", "tests", "__pycache__"}
    return [p.relative_to(ROOT) for p in ROOT.rglob("*") if p.is_file()
            and not skip & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)]


@pytest.mark.slow
def test_wheel_installs_only_pnn_with_its_data_files_and_console_script(tmp_path):
    # setuptools >= 70.1 builds wheels itself; older ones need the wheel package beside them
    if importlib.util.find_spec("setuptools") is None or (
            importlib.util.find_spec("setuptools.command.bdist_wheel") is None
            and importlib.util.find_spec("wheel") is None):
        pytest.skip(f"building a wheel without build isolation needs setuptools >= 70.1 (or "
                    f"an older setuptools and wheel) in this environment ({sys.executable}); "
                    f"install them with `{sys.executable} -m pip install setuptools wheel`")
    # build from a copy, so that the build/ and *.egg-info folders never touch the working tree
    src = tmp_path / "src"
    for rel in _source_files():
        if rel.parts[0] in ("experiments", "tests", "notebooks", "docs", "benchmarks"):
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(dist.glob("pnn-*.whl"))
    assert len(wheels) == 1, f"expected one pnn wheel in {dist}, got {list(dist.iterdir())}"
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
        top = {n.split("/")[0] for n in names}
        dist_info = [t for t in top if t.endswith(".dist-info")]
        assert len(dist_info) == 1, f"expected one .dist-info folder, got {sorted(top)}"
        # nothing but the pnn package (no top-level sim/, drivers/, tests/ ...)
        assert top - set(dist_info) == {"pnn"}, f"top-level entries of the wheel: {sorted(top)}"
        for required in ("pnn/__init__.py", "pnn/__main__.py", "pnn/py.typed",
                         "pnn/sim/acoustic.py", "pnn/drivers/profiles/emulator.toml"):
            assert required in names, f"{required} missing from {wheels[0].name}"
        entry_points = configparser.ConfigParser()
        entry_points.read_string(z.read(f"{dist_info[0]}/entry_points.txt").decode())
    assert dict(entry_points["console_scripts"]) == {"pnn": "pnn.cli:run"}


def test_every_third_party_import_is_a_declared_dependency():
    """Each module pnn imports from outside the standard library belongs to a distribution that
    pyproject.toml declares: a base dependency, or an extra (hardware, images) for the optional
    ones. A module that only the test extras happen to install (psutil came with ipython) would
    pass every test and fail on a user's `make demo`."""
    import ast
    import importlib.metadata
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-")
                for r in requirements}

    base = names(project["dependencies"])
    optional = names(project["optional-dependencies"]["hardware"]
                     + project["optional-dependencies"]["images"])
    dists = importlib.metadata.packages_distributions()
    found = {}
    for folder in ("pnn", "sim", "drivers"):
        for path in (root / folder).rglob("*.py"):
            if "firmware" in path.parts:  # runs on the microcontroller, not with pnn
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    top = mod.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("pnn", "sim", "drivers"):
                        continue
                    found.setdefault(top, str(path.relative_to(root)))
    # a distribution whose name the import system does not map (an extension module alone)
    unmapped = {"parselmouth": {"praat-parselmouth"}}
    # what a declared dependency itself requires is installed with it
    installed_with = set()
    for dist in base:
        for req in importlib.metadata.requires(dist) or []:
            if "extra ==" not in req:
                installed_with |= names([req])
    undeclared = {}
    for top, where in found.items():
        owners = {d.lower().replace("_", "-") for d in dists.get(top, [])} or unmapped.get(
            top, set())
        if not owners & (base | optional | installed_with):
            undeclared[top] = (where, sorted(owners))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
