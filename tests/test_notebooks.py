"""The tours in ``notebooks/`` run top to bottom, and are stored without outputs.

Each notebook is executed by nbclient on a ``python3`` kernel that is this interpreter (checked
from inside the kernel), with a temporary folder as its working directory and ``TMPDIR``, so
nothing is written into the repository.
"""

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
TOURS = ["01_simulated_phyll.ipynb", "02_hardware_in_the_loop.ipynb",
         "03_perturbations_adaptation.ipynb"]
#: each tour takes 25-50 s on a loaded 2-core machine; this only bounds a hang
CELL_TIMEOUT_S = 600


def test_the_tours_are_the_ones_listed():
    assert sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")) == TOURS


@pytest.mark.parametrize("name", TOURS)
def test_stored_without_outputs(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    stored = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and (c.outputs or c.execution_count is not None)]
    assert not stored, (f"{name}: cells {stored} are stored with outputs or execution counts; "
                        "clear them (jupyter nbconvert --clear-output --inplace)")


@pytest.mark.slow
@pytest.mark.parametrize("name", TOURS)
def test_runs_top_to_bottom(name, tmp_path, monkeypatch, child_jax_cache):
    # the kernel inherits this environment: temporary files under tmp_path, and this
    # interpreter's kernelspec found before any user-level one
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        [str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")]))
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    check = nbformat.v4.new_code_cell("import sys; print(sys.executable)")
    nb.cells.insert(0, check)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell raises
    kernel_python = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve(), (
        f"the notebook ran on {kernel_python}, not on the interpreter under test "
        f"{sys.executable}")
