"""The notebooks as a user runs them: every cell, top to bottom, in a Jupyter kernel of this interpreter started
in ``notebooks/``, on the miniature CPU-reproduction sweep (conftest ``miniature``). A last cell, added here,
prints what the assertions read."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"


def execute(notebook: Path, readout: str, env: dict[str, str] | None = None) -> tuple[dict, list]:
    """Run ``notebook`` in a fresh kernel, then the expression ``readout``: its value (JSON) and the cells."""
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(f"import json\nprint(json.dumps({readout}))"))
    # The kernel of this interpreter (ipykernel's own spec), whatever kernels the machine has installed.
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}})
    with pytest.MonkeyPatch.context() as mp:  # the kernel inherits this process's environment
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        client.execute()
    # A kernel may deliver one print as several stdout stream messages: join them, read the last line.
    stdout = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    return json.loads(stdout.strip().splitlines()[-1]), nb.cells


@pytest.mark.parametrize("name", ["oscillation_analysis", "kappa_selection", "theory_checks"])
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    cells = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_the_oscillation_notebook_executes_on_the_miniature(miniature) -> None:
    got, _ = execute(NOTEBOOKS / "oscillation_analysis.ipynb", """{
        "results": len(sweep.results), "cells": sweep.cells, "claims": [s.title[:7] for s in claims],
        "ls_seeds": table[("ls", 6, 16)]["feat_level_mrc"].n, "level_axes": len(levels.axes),
        "curves": curves is not None}""", env={"SCALELONG_REPRO_DIR": str(miniature[0]), "SCALELONG_STUDY": "uvit"})
    assert got["results"] == 4 and got["cells"] == [[6, 16]]
    assert got["claims"] == [*(f"Claim {k}" for k in range(1, 7)), "Stabili"]  # six claims, then the frontier
    assert got["ls_seeds"] == 2
    assert got["level_axes"] >= 6 and got["curves"]


@pytest.mark.slow
def test_the_kappa_notebook_gives_the_sec41_range_and_the_learned_ls_curve(miniature) -> None:
    got, _ = execute(NOTEBOOKS / "kappa_selection.ipynb", """{
        "mean": stats.mean, "high": stats.high, "range_12": ranges[12],
        "learned": [[list(key), len(gates)] for key, gates in learned.items()]}""",
                  env={"SCALELONG_REPRO_DIR": str(miniature[0]), "SCALELONG_STUDY": "uvit"})
    assert 1.0 < got["mean"] < got["high"] < 5.0
    low, high = got["range_12"]
    assert 0.2 < low < 0.5 < high < 0.8  # the sweep's kappa = 0.5 lies inside the range for the digits
    assert got["learned"] == [[[6, 16], 6]]


@pytest.mark.slow
def test_the_theory_notebook_reproduces_lemma_3_2_and_the_sec41_ranges() -> None:
    """Needs no sweep: the MLP-UNet of Eq. (3) and the κ range at the paper's r_t statistics (tests/test_theory.py
    and tests/test_kappa.py check the same functions at their own sizes)."""
    got, _ = execute(NOTEBOOKS / "theory_checks.ipynb", """{
        "lemma": list(Out[1]), "c1": res.c1, "depth_r2": res.depth_r2,
        "range_6": kappa.kappa_range(1.22, 5.0, 6)}""")  # Out[1]: the first cell's value, Lemma 3.2
    measured, predicted, stderr = got["lemma"]
    assert abs(measured - predicted) < 4 * stderr
    assert got["c1"] > 0 and got["depth_r2"] > 0.95
    assert [round(v, 4) for v in got["range_6"]] == [0.4247, 0.9626]  # Sec. 4.1, as tests/test_kappa.py has it
