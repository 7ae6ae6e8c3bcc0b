"""The theta explorer in a real JupyterLab in a real Chromium: the page warps the image itself,
exactly as ``geometry.warp`` (every family), a mouse drags the region and its handles, typed values
and the family switch reach the kernel, and the kernel's ``explorer.params`` is what the page shows.

Needs /usr/bin/chromium and Playwright (skipped without them; a failure under ``CI=true``).
JupyterLab serves a temp-dir copy of notebooks/ (see ``browser_support``), so nothing is written
into the repository. A screenshot of the explorer is saved under the test's tmp_path.

The explorer tests run a notebook written by the fixture (``explorer_test.ipynb``: a colour,
non-square image, an output of another size), served beside the copies of notebooks/.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from browser_support import (  # noqa: F401 (fixture)
    KERNEL_EXEC_JS, PANEL_JS, browser, copy_notebooks, jupyterlab, report_failure, require_browser, run_all,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = "explorer_test.ipynb"
LOAD_TIMEOUT = 120_000  # ms: page load, kernel start, run all cells (torch import on a busy machine)
UPDATE_TIMEOUT = 60_000  # ms: one widget round trip

# Every code cell ran (has an execution count) and none has an error output.
CELL_REPORT_JS = """(name) => {
  const model = (%s)(name).content.model;
  const report = {code: 0, ran: 0, errors: []};
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    if (cell.type !== 'code') continue;
    report.code += 1;
    if (cell.executionCount !== null && cell.executionCount !== undefined) report.ran += 1;
    for (let j = 0; j < cell.outputs.length; j++) {
      const o = cell.outputs.get(j).toJSON();
      if (o.output_type === 'error') report.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
    }
  }
  return report;
}""" % PANEL_JS

EXPLORER = ".stnviz-theta-explorer .stnviz-explorer"
TEST_NOTEBOOK_CELLS = [
    "import json, numpy as np, torch\n"
    "from stnviz import geometry\n"
    "from stnviz.widgets import ThetaExplorer\n"
    "torch.manual_seed(0)\n"
    "images = torch.rand(2, 3, 40, 48)\n"
    "images[:, :, 10:30, 12:36] *= 0.4  # a darker block: the picture has edges\n"
    "explorer = ThetaExplorer(images, output_size=(36, 44))\n"
    "explorer",
]
# The page's parameters and family (the explorer writes them on its root at every repaint).
PAGE_STATE_JS = """(sel) => { const r = document.querySelector(sel);
  return r && r.dataset.params ? {params: JSON.parse(r.dataset.params), family: r.dataset.family} : null; }"""
# The output canvas's RGB pixels at its own resolution.
OUTPUT_PIXELS_JS = """(sel) => { const c = document.querySelector(sel).querySelector('canvas.stnviz-output');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const rgb = [];
  for (let i = 0; i < d.length; i += 4) rgb.push(d[i], d[i + 1], d[i + 2]);
  return {width: c.width, height: c.height, rgb}; }"""
# geometry.warp of the kernel's state, as 8-bit RGB (what the page must show).
REFERENCE_CODE = (
    "_st = explorer.state\n"
    "_t = torch.tensor(_st.params, dtype=torch.float32).unsqueeze(0)\n"
    "_t = _t.view(1, 2, 3) if _st.family == 'affine' else _t.view(1, -1, 2) if _st.family == 'tps' else _t\n"
    "_out = geometry.warp(explorer.images[_st.index:_st.index + 1], geometry.make_grid(_t, _st.family, explorer.output_size))\n"
    "print(json.dumps({'family': _st.family, 'params': _st.params.tolist(),"
    " 'rgb': (_out[0].permute(1, 2, 0) * 255).reshape(-1).tolist()}))"
)


def _kernel_json(page, code: str, timeout_ms: int = UPDATE_TIMEOUT) -> dict:
    res = page.evaluate(KERNEL_EXEC_JS, [NOTEBOOK, code, timeout_ms])
    assert not res["errors"], f"kernel probe failed: {res['errors']}"
    return json.loads(res["stdout"].strip().splitlines()[-1])


def _kernel_params(page) -> dict:
    return _kernel_json(page, "print(json.dumps({'family': explorer.family, 'params': explorer.params.tolist()}))")


def _agreed(page, timeout: float = 20.0) -> dict:
    """Wait until the kernel's explorer.params and family are exactly what the page shows."""
    deadline = time.monotonic() + timeout
    while True:
        shown, kernel = page.evaluate(PAGE_STATE_JS, EXPLORER), _kernel_params(page)
        if shown == kernel:
            return kernel
        assert time.monotonic() < deadline, f"the page shows {shown}, the kernel holds {kernel}"
        time.sleep(0.3)


def _set_from_kernel(page, code: str) -> dict:
    _kernel_json(page, code + "\nprint('{}')")
    return _agreed(page)


def _assert_pixels_are_warp(page, what: str) -> float:
    ref = _kernel_json(page, REFERENCE_CODE)
    shown = page.evaluate(OUTPUT_PIXELS_JS, EXPLORER)
    assert page.evaluate(PAGE_STATE_JS, EXPLORER)["params"] == ref["params"], what
    assert len(shown["rgb"]) == len(ref["rgb"]), (what, shown["width"], shown["height"])
    diff = max(abs(a - b) for a, b in zip(shown["rgb"], ref["rgb"]))
    assert diff <= 2.0, f"{what}: the page's output differs from geometry.warp by {diff:.2f}/255"
    return diff


def _centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _drag(page, start, dx: float, dy: float, steps: int = 8, shot: Path | None = None) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + dx, start[1] + dy, steps=steps)
    if shot is not None:  # a drag in progress: the hand is still down
        page.locator(EXPLORER).screenshot(path=str(shot))
    page.mouse.up()


def _on_failure(page, lab, directory: Path) -> None:
    report_failure(page, lab, directory, "JupyterLab")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_browser()
    work = tmp_path_factory.mktemp("jupyterlab")
    root = copy_notebooks(NOTEBOOKS, work / "notebooks")
    write_notebook(root / NOTEBOOK, TEST_NOTEBOOK_CELLS)
    with jupyterlab(root, work / "jupyter") as server:
        yield server


@pytest.fixture(scope="module")
def explorer_page(lab, browser, tmp_path_factory):
    """The test notebook opened in JupyterLab with every cell run; yields the page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(UPDATE_TIMEOUT)
    t0 = time.monotonic()
    try:
        page.goto(lab.notebook_url(NOTEBOOK), wait_until="domcontentloaded", timeout=LOAD_TIMEOUT)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=LOAD_TIMEOUT)
        run_all(page, NOTEBOOK, LOAD_TIMEOUT)
        page.wait_for_function(f"() => !!({PAGE_STATE_JS})({json.dumps(EXPLORER)})", timeout=LOAD_TIMEOUT)
        cells = page.evaluate(CELL_REPORT_JS, NOTEBOOK)
        assert not cells["errors"], f"cells failed in JupyterLab: {cells['errors']}"
        print(f"\nexplorer notebook ran in JupyterLab in {time.monotonic() - t0:.1f} s")
    except BaseException:
        _on_failure(page, lab, tmp_path_factory.mktemp("explorer_page"))
        page.close()
        raise
    yield page
    page.close()


def test_page_warps_exactly_as_geometry_for_every_family(explorer_page, lab, tmp_path):
    """For each family, parameters set from Python move the page, and the page's own output
    pixels are geometry.warp of those parameters (max difference <= 2/255)."""
    page = explorer_page
    cases = {
        "affine": "explorer.family = 'affine'; explorer.params = [0.8, -0.3, 0.1, 0.25, 0.7, -0.2]",
        "projective": "explorer.family = 'projective'; explorer.params = [0.9, 0.1, 0.05, -0.1, 0.8, 0.1, 0.2, -0.15]",
        "tps": "explorer.family = 'tps'; explorer.params = (geometry.tps_control_points(9).reshape(-1) * 0.8"
               " + 0.1 * torch.randn(18, generator=torch.Generator().manual_seed(1))).tolist()",
    }
    try:
        diffs = {}
        for family, code in cases.items():
            held = _set_from_kernel(page, code)
            assert held["family"] == family, held
            diffs[family] = _assert_pixels_are_warp(page, family)
        # tilted past its horizon: the page greys the region and says why, the kernel agrees
        _set_from_kernel(page, "explorer.family = 'projective'; explorer.params = [1, 0, 0, 0, 1, 0, 1.5, 0]")
        root = page.locator(EXPLORER)
        assert "stnviz-invalid" in root.get_attribute("class")
        assert "horizon crosses the output" in root.locator(".stnviz-message").text_content()
        look = Path("/tmp/look") if Path("/tmp/look").is_dir() else tmp_path
        root.screenshot(path=str(look / "explorer_folded_homography.png"))
        print(f"max |page - geometry.warp| per family (in 1/255): {diffs}")
    except BaseException:
        _on_failure(page, lab, tmp_path)
        raise


def test_drag_region_and_handles(explorer_page, lab, tmp_path):
    """A real mouse drags the region (move), a corner (scale) and the round handle (turn) of the
    affine region, a corner of the projective one and a TPS control point: each changes the
    parameters the page shows, the kernel holds exactly those, and the pixels stay geometry.warp."""
    page = explorer_page
    root = page.locator(EXPLORER)
    look = Path("/tmp/look") if Path("/tmp/look").is_dir() else tmp_path
    try:
        _set_from_kernel(page, "explorer.family = 'affine'; explorer.params = [0.6, 0, 0, 0, 0.6, 0]")
        root.scroll_into_view_if_needed()
        before = _agreed(page)["params"]
        x, y = _centre(root.locator(".stnviz-region"))
        _drag(page, (x, y), 30, 20, shot=look / "explorer_drag_move.png")
        moved = _agreed(page)["params"]
        assert moved[2] > before[2] + 0.05 and moved[5] > before[5] + 0.05, (before, moved)
        assert moved[0] == before[0] and moved[4] == before[4], "a move changed the linear part"
        _drag(page, _centre(root.locator(".stnviz-corner-2")), 25, 25, shot=look / "explorer_drag_corner.png")
        scaled = _agreed(page)["params"]
        assert scaled[0] > moved[0] + 0.05 and scaled[4] > moved[4] + 0.05, (moved, scaled)
        _drag(page, _centre(root.locator(".stnviz-rotate")), 60, 0, shot=look / "explorer_drag_rotate.png")
        turned = _agreed(page)
        k = _kernel_json(page, "print(json.dumps(explorer.state.parts))")
        assert abs(k["rotation_deg"]) > 10, k
        _assert_pixels_are_warp(page, "affine after drags")

        _set_from_kernel(page, "explorer.family = 'projective'")
        _drag(page, _centre(root.locator(".stnviz-corner-0")), 30, 15, shot=look / "explorer_drag_projective.png")
        held = _agreed(page)
        assert held["family"] == "projective" and held["params"] != [1, 0, 0, 0, 1, 0, 0, 0], held
        _assert_pixels_are_warp(page, "projective after a corner drag")

        _set_from_kernel(page, "explorer.family = 'tps'")
        _drag(page, _centre(root.locator(".stnviz-point-4")), -20, 25, shot=look / "explorer_drag_tps.png")
        held = _agreed(page)
        assert held["params"][8] < -0.05 and held["params"][9] > 0.05, held  # point 4 (the centre) moved
        _assert_pixels_are_warp(page, "TPS after a point drag")
        print(f"affine after drags {turned['params']}; screenshots in {look}")
    except BaseException:
        _on_failure(page, lab, tmp_path)
        raise


def test_typed_values_and_family_switch_reach_the_kernel(explorer_page, lab, tmp_path):
    """Typing 30 into the rotation box turns theta by exactly 30 degrees in the kernel; the family
    switch in the page switches the kernel's explorer to that family's identity."""
    page = explorer_page
    root = page.locator(EXPLORER)
    try:
        _set_from_kernel(page, "explorer.family = 'affine'; explorer.params = [1, 0, 0, 0, 1, 0]")
        box = root.locator(".stnviz-part-rotation_deg input.stnviz-number")
        box.fill("30")
        box.press("Enter")
        held = _agreed(page)
        c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
        assert held["params"] == pytest.approx([c, -s, 0, s, c, 0], abs=1e-12), held
        entry = root.locator(".stnviz-entry-2 input.stnviz-number")  # tx
        entry.fill("0.25")
        entry.press("Enter")
        assert _agreed(page)["params"][2] == 0.25
        root.locator("select.stnviz-family-select").select_option("tps")
        held = _agreed(page)
        assert held["family"] == "tps" and len(held["params"]) == 18, held
        _assert_pixels_are_warp(page, "TPS identity after the switch")
        root.locator("select.stnviz-family-select").select_option("affine")
        assert _agreed(page)["params"] == [1, 0, 0, 0, 1, 0]
        root.locator(".stnviz-preset-zoom-2x").click()
        assert _agreed(page)["params"] == [0.5, 0, 0, 0, 0.5, 0]
    except BaseException:
        _on_failure(page, lab, tmp_path)
        raise


# ------------------------------------------------------------------ every notebook, as a user sees it
SHOT_NOTEBOOKS = ["01_quickstart.ipynb", "02_theta_explorer.ipynb", "03_training_animation.ipynb",
                  "04_video_stability.ipynb", "05_inspector.ipynb", "06_diagnose.ipynb", "07_lightning.ipynb"]

# Shuts the notebook's kernel down (each page's kernel holds several hundred MB).
SHUTDOWN_JS = """async (name) => { const p = (%s)(name); if (p) await p.sessionContext.shutdown(); }""" % PANEL_JS


@pytest.mark.parametrize("name", SHOT_NOTEBOOKS)
def test_notebook_screenshots(lab, browser, tmp_path, name):
    """Run All in JupyterLab: no cell fails, and every output (figures, widgets, tables) is
    screenshotted into the test's tmp_path (look at them: a figure nobody looked at is not done)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(UPDATE_TIMEOUT)
    try:
        page.goto(lab.notebook_url(name), wait_until="domcontentloaded", timeout=LOAD_TIMEOUT)
        run_all(page, name, 600_000)
        res = page.evaluate(KERNEL_EXEC_JS, [name, "print('ok')", 600_000])  # queued behind run-all
        assert not res["errors"], res
        cells = page.evaluate(CELL_REPORT_JS, name)
        assert not cells["errors"], f"{name}: cells failed in JupyterLab: {cells['errors']}"
        assert cells["ran"] == cells["code"] > 0, f"{name}: not every code cell ran: {cells}"
        time.sleep(2)  # images and widgets render
        outputs = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-OutputArea-output")
        shots = 0
        for i in range(outputs.count()):
            out = outputs.nth(i)
            if not out.locator("img, canvas, .jupyter-widgets, table, svg").count():
                continue
            out.scroll_into_view_if_needed()
            out.screenshot(path=str(tmp_path / f"{name.split('.')[0]}_output{i:02d}.png"))
            shots += 1
        print(f"{name}: {cells['code']} code cells ran; {shots} output screenshots in {tmp_path}")
        assert shots > 0
    except BaseException:
        _on_failure(page, lab, tmp_path)
        raise
    finally:
        try:
            page.evaluate(SHUTDOWN_JS, name)
        except Exception:
            pass
        page.close()
