"""notebooks/analyze_study.ipynb, executed as Jupyter runs it (nbclient, a real kernel) on a real
study made by the runner; any cell's error fails the test."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from sweeps.artifacts import ARTIFACT_DIR

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "analyze_study.ipynb"
PLOTLY = "application/vnd.plotly.v1+json"


def with_parameters(nb, **values):
    """The notebook with its first cell (tagged `parameters`, papermill's convention) replaced by
    assignments of `values`, which must be the names that cell sets."""
    first = nb.cells[0]
    assert "parameters" in first.metadata.get("tags", [])
    names = {line.split("=", 1)[0].strip() for line in first.source.splitlines()
             if "=" in line and not line.lstrip().startswith("#")}
    assert names == set(values), names
    first.source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    return nb


def outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if kind in o.get("data", {}) or o.get("output_type") == kind]


def test_the_notebook_runs_on_a_real_study(tiny_study, monkeypatch):
    cwd, url, name = tiny_study
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed without outputs
    with_parameters(nb, STORAGE=url, STUDY=name, ARTIFACT_DIR=str(cwd / ARTIFACT_DIR))
    # the kernel imports sweeps from this checkout, as from an installed one
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "".join(o.get("text", "") for c in code for o in c.get("outputs", []))
    assert f"study {name!r}: 4 trials" in text and "best: trial" in text and "baseline: trial 0" in text
    assert "uploaded: config.yaml, curve.png, metrics.jsonl" in text
    table = next(c for c in code if c.source.startswith("table = "))
    html = table.outputs[0]["data"]["text/html"]
    assert html.count("<tr>") == 4 + 1 and "schedule.lr" in html  # a row a trial, their params
    figures = [o["data"][PLOTLY] for c in code for o in outputs(c, PLOTLY)]
    titles = [f["layout"].get("title", {}).get("text", "") for f in figures]
    assert len(figures) == 6, titles  # history, intermediate values, importances, parallel, slice, curves
    curves = figures[-1]
    assert curves["layout"]["xaxis"]["type"] == "log" and len(curves["data"]) == 4
    assert all(len(trace["x"]) >= 3 for trace in curves["data"])
    assert outputs(code[-1], "image/png")  # the best trial's curve, read from the artifact store
