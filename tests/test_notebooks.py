"""Every notebook in notebooks/ runs top to bottom headless, and shows what it promises.

Notebooks are executed in memory with nbclient (kernel ``python3``, working directory
``notebooks/``); the executed copy is never written back, so the repository keeps its notebooks
without outputs (checked here too).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CELL_TIMEOUT = 180  # seconds; kernel start + `import torch` is slow on a busy 2-core machine
CLEAR = "strip it with `python3 scripts/strip_notebook.py notebooks/*.ipynb` (README, 'Where to go next')"
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


def _stored(path: Path) -> nbformat.NotebookNode:
    """The notebook as git stores it (the index: what is committed or staged), not what a JupyterLab
    session autosaved into the working copy; the file itself outside a git checkout or when new."""
    try:
        shown = subprocess.run(["git", "show", f":{path.relative_to(ROOT).as_posix()}"], cwd=ROOT,
                               capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        shown = None
    if shown is not None and shown.returncode == 0:
        return nbformat.reads(shown.stdout.decode("utf-8"), as_version=4)
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_stored_without_outputs_and_listed(path):
    nb = _stored(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{path.name}: a cell has stored outputs; {CLEAR}"
    assert "widgets" not in nb.metadata, f"{path.name}: stored widget state; {CLEAR}"
    assert f"`{path.name}`" in (NOTEBOOKS / "README.md").read_text(), f"{path.name} is missing from notebooks/README.md"


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=stnviz", "-c", "user.email=stnviz@example.invalid", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def _run_in_lab(path: Path) -> None:
    """What a JupyterLab session's autosave leaves: outputs, counts, widget state, full language_info."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, c in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        c["execution_count"] = i + 1
        c["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["done \u00b0\n"]}]
        c["metadata"]["execution"] = {"iopub.status.idle": "2026-12-03T10:00:00.000Z"}
    nb["metadata"]["widgets"] = {WIDGET_STATE: {"state": {}, "version_major": 2, "version_minor": 0}}
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.2", "pygments_lexer": "ipython3"}
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_running_notebooks_leaves_the_repository_clean(tmp_path):
    """`make` installs the clean filter that .gitattributes names: an autosaved Run All is no change."""
    for rel in (".gitattributes", "Makefile", "scripts/strip_notebook.py", "notebooks/01_quickstart.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "start")
    nb = tmp_path / "notebooks" / "01_quickstart.ipynb"

    _run_in_lab(nb)  # without the filter, the run shows as a change (the newcomer's failing state)
    assert _git(tmp_path, "status", "--porcelain").strip() == "M notebooks/01_quickstart.ipynb"

    made = subprocess.run(["make", "-s", "notebook-filter", f"PYTHON={sys.executable}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert _git(tmp_path, "diff", "--stat").strip() == ""  # git compares the stripped text: no change
    _git(tmp_path, "add", "-A")  # a commit stores it stripped, byte for byte as before: nothing staged
    assert _git(tmp_path, "diff", "--cached", "--stat").strip() == ""
    assert _git(tmp_path, "status", "--porcelain").strip() == ""
    assert _git(tmp_path, "show", ":notebooks/01_quickstart.ipynb") == (ROOT / "notebooks/01_quickstart.ipynb").read_text(encoding="utf-8")
    assert "done" in nb.read_text(encoding="utf-8")  # the working copy keeps its outputs


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_strip_filter_keeps_stored_notebooks_byte_for_byte(path):
    """The filter's output for a stored notebook is the notebook itself (else git would see a change)."""
    text = _stored(path)
    stored = subprocess.run([sys.executable, str(ROOT / "scripts" / "strip_notebook.py")],
                            input=nbformat.writes(text).encode("utf-8"), capture_output=True, timeout=60)
    assert stored.returncode == 0
    assert stored.stdout.decode("utf-8") == nbformat.writes(text) + "\n"


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
    cell = _cell(nb, "explorer = ThetaExplorer(")
    views = _widget_views(cell)
    assert len(views) == 1, "the explorer cell must display one widget"
    assert "stnviz-theta-explorer" in _dom_classes(nb, views[0])
    assert any("image/png" in o.get("data", {}) for o in cell.outputs), "no picture for a static export"

    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    pages = [m for m in state.values() if m["model_name"] == "AnyModel" and "families" in m["state"]]
    assert len(pages) == 1, "one explorer page (anywidget) in the saved widget state"
    page, buffers = pages[0]["state"], pages[0].get("buffers")
    # the image went to the page once (a binary buffer), with the family switch, a model's learned
    # transform (the ghost outline, its preset) and the model's answer for the region on screen
    assert buffers and page["image_shape"] == [28, 28] and page["count"] == 8
    assert [f for f, _ in page["families"]] == ["affine", "projective", "tps"]
    assert len(page["learned"]) == len(page["params"]) and "snap to learned" in [p["name"] for p in page["presets"]]
    assert page["prediction"] and all(0 <= v <= 1 for _, v in page["prediction"])

    learned = _stdout(_cell(nb, "print(\"current theta:\""))
    assert "current theta: [1. 0. 0. 0. 1. 0.]" in learned
    assert "learned theta for digit 0:" in learned

    switched = _stdout(_cell(nb, 'explorer.family = "projective"'))
    assert "identity homography (first 8 entries): [1. 0. 0. 0. 1. 0. 0. 0.]" in switched
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("#")]
    assert any(h.startswith("## Projective and thin-plate") for h in headings)
    assert headings[-1].startswith("## What this notebook showed")

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
    assert "prediction" not in info[1]  # an image output: no prediction
    assert "the edge repeated outside the input" in info[1] and "align_corners" not in info[1]  # its sampling, in words

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
