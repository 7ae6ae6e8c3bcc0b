"""Every notebook in notebooks/ runs top to bottom headless, and shows what it promises.

Notebooks are executed in memory with nbclient (kernel ``python3``, working directory
``notebooks/``); the executed copy is never written back, so the repository keeps its notebooks
without outputs (checked here too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CELL_TIMEOUT = 180  # seconds; kernel start + `import torch` is slow on a busy 2-core machine
CLEAR = "clear it with the nbconvert command in the README's Contributing section"
PROBE = "import json as _j, sys as _s; print('STNVIZ-KERNEL ' + _j.dumps({'prefix': _s.prefix}))"


def _execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    # A probe cell at the end (in memory only): which Python ran the notebook.
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, startup_timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


@pytest.fixture(scope="module")
def executed():
    cache: dict[str, nbformat.NotebookNode] = {}

    def get(name: str) -> nbformat.NotebookNode:
        if name not in cache:
            cache[name] = _execute(NOTEBOOKS / name)
        return cache[name]

    return get


def _cell(nb, needle: str):
    cells = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert len(cells) == 1, f"expected one code cell containing {needle!r}, found {len(cells)}"
    return cells[0]


def _widget_views(cell) -> list[str]:
    return [o["data"][WIDGET_VIEW]["model_id"] for o in cell.outputs if WIDGET_VIEW in o.get("data", {})]


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _dom_classes(nb, model_id: str) -> list[str]:
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    return list(state[model_id]["state"].get("_dom_classes", []))


def test_notebooks_exist():
    assert {p.name for p in PATHS} >= {"02_theta_explorer.ipynb", "05_inspector.ipynb"}


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_stored_without_outputs_and_listed(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{path.name}: a cell has stored outputs; {CLEAR}"
    assert "widgets" not in nb.metadata, f"{path.name}: stored widget state; {CLEAR}"
    assert f"`{path.name}`" in (NOTEBOOKS / "README.md").read_text(), f"{path.name} is missing from notebooks/README.md"


@pytest.mark.parametrize("path", [p for p in PATHS if p.name[:2] in ("01", "02", "03", "04", "da")],
                         ids=lambda p: p.name)
def test_ends_with_a_conclusion(path):
    """Each of these notebooks ends with a markdown cell that says what it showed."""
    last = nbformat.read(path, as_version=4).cells[-1]
    assert last.cell_type == "markdown", f"{path.name} ends with a code cell"
    assert last.source.startswith(("## What this notebook showed", "**What this shows.**")), last.source[:80]


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_runs(executed, path):
    nb = executed(path.name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    probe = _stdout(nb.cells[-1])
    info = json.loads(probe.split("STNVIZ-KERNEL ", 1)[1])
    assert Path(info["prefix"]).resolve() == Path(sys.prefix).resolve(), (
        f"the notebook ran in {info['prefix']}, not in this environment ({sys.prefix}): "
        "the python3 kernelspec points at another Python"
    )


@pytest.mark.slow
def test_theta_explorer_outputs(executed):
    nb = executed("02_theta_explorer.ipynb")
    views = _widget_views(_cell(nb, "explorer = ThetaExplorer("))
    assert len(views) == 1, "the explorer cell must display one widget"
    assert "stnviz-theta-explorer" in _dom_classes(nb, views[0])

    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    classes = {c for m in state.values() for c in m["state"].get("_dom_classes", [])}
    # the affine explorer's decomposed sliders, buttons (incl. "learned": a model was given) and views
    assert {"stnviz-part-rotation", "stnviz-theta-5", "stnviz-learned", "stnviz-input", "stnviz-output"} <= classes
    # the two images were rendered in the kernel (PNG bytes in the saved widget state)
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    assert images and all(m.get("buffers") for m in images), "an image view has no picture"

    learned = _stdout(_cell(nb, "explorer.learned_params(0)"))
    assert "current theta: [1. 0. 0. 0. 1. 0.]" in learned
    assert "learned theta for digit 0:" in learned

    for family in ("projective", "tps"):  # each under its own heading
        variants = _widget_views(_cell(nb, f'family="{family}"'))
        assert len(variants) == 1 and "stnviz-theta-explorer" in _dom_classes(nb, variants[0]), family
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("#")]
    assert any(h.startswith("### Projective") for h in headings) and any(h.startswith("### Thin-plate") for h in headings)
    assert headings[-1].startswith("## What this notebook showed")
    assert {"stnviz-theta-7", "stnviz-tps-point", "stnviz-tps-x"} <= classes  # projective has 8 entries; TPS

    opencv = _stdout(_cell(nb, "geometry.theta_to_pixel(zoom"))
    # 2x zoom on 28x28, align_corners=False: x_out = 2 x_in - 13.5
    assert "2.0000,   0.0000, -13.5000" in opencv


@pytest.mark.slow
def test_inspector_outputs(executed):
    nb = executed("05_inspector.ipynb")
    views = _widget_views(_cell(nb, "\ninspector = STNInspector("))
    assert len(views) == 1 and "stnviz-inspector" in _dom_classes(nb, views[0])
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    info = [m["state"]["value"] for m in state.values() if "stnviz-info" in m["state"].get("_dom_classes", [])]
    assert len(info) == 2  # the GTSRB inspector, then the foreign registration net's
    assert "prediction: <b>speed limit 20</b>" in info[0] and "true:" in info[0]
    assert "prediction" not in info[1] and "align_corners=True" in info[1]  # an image output: no prediction

    table = _cell(nb, "inspector.theta_table(0)").outputs
    assert "rotation (deg)" in table[0]["data"]["text/html"] and "body.1" in table[0]["data"]["text/html"]

    captured = _stdout(_cell(nb, "capture(model) as rec"))
    assert "keys=['transformer']" in captured and "theta (8, 2, 3)" in captured and "reproduced: True" in captured
    foreign = _stdout(_cell(nb, "stnviz.capture(net) as foreign_rec"))
    assert "RegistrationNet:grid_sample#1 role=image" in foreign and "role=auxiliary" in foreign

    figure = [o for o in _cell(nb, "plot_batch(record").outputs if "image/png" in o.get("data", {})]
    assert len(figure) == 1, "plot_batch should show one figure"

    registration = _cell(nb, "class RegistrationNet")
    assert any("image/png" in o.get("data", {}) for o in registration.outputs)  # its record drawn
    assert "theta in stnviz's convention" in _stdout(registration)
