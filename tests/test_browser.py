"""The theta explorer in a real JupyterLab in a real Chromium: a key press on a slider reaches the
kernel, and the kernel's re-rendered pictures reach the page.

Needs /usr/bin/chromium and Playwright (skipped without them; a failure under ``CI=true``).
JupyterLab serves a temp-dir copy of notebooks/ (see ``browser_support``), so nothing is written
into the repository. A screenshot of the explorer is saved under the test's tmp_path.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from browser_support import CHROMIUM, CHROMIUM_ARGS, copy_notebooks, jupyterlab, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = "02_theta_explorer.ipynb"
LOAD_TIMEOUT = 120_000  # ms: page load, kernel start, run all cells (torch import on a busy machine)
UPDATE_TIMEOUT = 60_000  # ms: one widget round trip
PRESSES = 5

# The notebook panel showing NOTEBOOK, found by path (not "whatever is focused").
PANEL_JS = """(name) => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === name && w.sessionContext) return w;
  }
  return null;
}"""

# Run code in the notebook's kernel through JupyterLab's own connection (no cell is added);
# returns {stdout, errors}.
KERNEL_EXEC_JS = """async ([name, code]) => {
  const panel = (%s)(name);
  const kernel = panel.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  const out = {stdout: '', errors: []};
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === 'stream' && msg.content.name === 'stdout') out.stdout += msg.content.text;
    if (t === 'error') out.errors.push(msg.content.ename + ': ' + msg.content.evalue);
  };
  const reply = await future.done;
  if (reply.content.status !== 'ok') out.errors.push('status ' + reply.content.status);
  return out;
}""" % PANEL_JS

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

EXPLORER = ".stnviz-theta-explorer:has(.stnviz-part-rotation)"  # the affine one (the notebook shows three)
SOURCES_JS = """(sel) => {
  const root = document.querySelector(sel);
  if (!root) return null;
  const src = (cls) => { const el = root.querySelector(cls); return el ? el.getAttribute('src') : null; };
  return {input: src('img.stnviz-input'), output: src('img.stnviz-output')};
}"""

STATE_CODE = (
    "import json as _json\n"
    "print(_json.dumps({'rotation': explorer.parts['rotation'].value, 'params': explorer.params.tolist(),"
    " 'parts': {k: s.value for k, s in explorer.parts.items()}, 'entries': [s.value for s in explorer.entries],"
    " 'log': len(explorer.log.outputs), 'message': explorer.message.value}))"
)
IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _kernel_state(page) -> dict:
    res = page.evaluate(KERNEL_EXEC_JS, [NOTEBOOK, STATE_CODE])
    assert not res["errors"], f"kernel probe failed: {res['errors']}"
    return json.loads(res["stdout"].strip().splitlines()[-1])


def _settled_state(page, readout, timeout: float = UPDATE_TIMEOUT / 1000) -> tuple[dict, float]:
    """Kernel state and page readout once neither changes between two probes (widget messages are
    throttled and may trickle in after the first re-render)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        time.sleep(0.5)
        now = (_kernel_state(page), float(readout.text_content().replace("\u2212", "-")))
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def _sources(page) -> dict:
    return page.evaluate(SOURCES_JS, EXPLORER)


def _wait_new_pictures(page, old: dict) -> None:
    page.wait_for_function(
        f"""(old) => {{ const s = ({SOURCES_JS})({json.dumps(EXPLORER)});
              return !!s && s.input !== old.input && s.output !== old.output
                     && s.input.startsWith('blob:') && s.output.startsWith('blob:'); }}""",
        arg=old,
        timeout=UPDATE_TIMEOUT,
    )


def _on_failure(page, lab, directory: Path) -> None:
    try:
        failure = directory / "failure.png"
        page.screenshot(path=str(failure), timeout=10_000)
        print(f"screenshot of the failure: {failure}")
    except Exception as e:  # the page may be gone
        print(f"(no failure screenshot: {e})")
    print(f"JupyterLab log tail:\n{lab.log_tail()}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_browser()
    work = tmp_path_factory.mktemp("jupyterlab")
    root = copy_notebooks(NOTEBOOKS, work / "notebooks")
    with jupyterlab(root, work / "jupyter") as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def explorer_page(lab, browser, tmp_path_factory):
    """The notebook opened in JupyterLab with every cell run; yields the page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(UPDATE_TIMEOUT)
    t0 = time.monotonic()
    try:
        page.goto(lab.notebook_url(NOTEBOOK), wait_until="domcontentloaded", timeout=LOAD_TIMEOUT)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=LOAD_TIMEOUT)
        page.wait_for_function(f"() => !!({PANEL_JS})({json.dumps(NOTEBOOK)})", timeout=LOAD_TIMEOUT)
        page.evaluate(
            """async (name) => {
                 const panel = (%s)(name);
                 await panel.context.ready;
                 await panel.sessionContext.ready;
                 window.jupyterapp.shell.activateById(panel.id);
                 await window.jupyterapp.commands.execute('notebook:run-all-cells');
               }""" % PANEL_JS,
            NOTEBOOK,
        )
        # The explorer is on the page with both pictures rendered by the kernel.
        page.wait_for_function(
            f"() => {{ const s = ({SOURCES_JS})({json.dumps(EXPLORER)});"
            " return !!s && [s.input, s.output].every(v => v && v.startsWith('blob:')); }",
            timeout=LOAD_TIMEOUT,
        )
        _kernel_state(page)  # queued behind run-all: returns once every cell has run
        cells = page.evaluate(CELL_REPORT_JS, NOTEBOOK)
        assert not cells["errors"], f"cells failed in JupyterLab: {cells['errors']}"
        assert cells["ran"] == cells["code"] > 0, f"not every code cell ran: {cells}"
        print(f"\nnotebook ran in JupyterLab in {time.monotonic() - t0:.1f} s")
    except BaseException:
        _on_failure(page, lab, tmp_path_factory.mktemp("explorer_page"))
        page.close()
        raise
    yield page
    page.close()


def test_rotation_slider_reaches_kernel_and_page(explorer_page, lab, tmp_path):
    page = explorer_page
    t0 = time.monotonic()
    try:
        before = _kernel_state(page)
        assert before["rotation"] == 0.0 and before["params"] == IDENTITY, before
        explorer = page.locator(EXPLORER)
        old = _sources(page)
        handle = explorer.locator(".stnviz-part-rotation .noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(PRESSES):
            page.keyboard.press("ArrowRight")

        # Both pictures were re-rendered by the kernel and replaced on the page.
        _wait_new_pictures(page, old)
        readout = explorer.locator(".stnviz-part-rotation .widget-readout")
        page.wait_for_function("(el) => parseFloat(el.textContent) > 0", arg=readout.element_handle(),
                               timeout=UPDATE_TIMEOUT)
        after, shown = _settled_state(page, readout)
        # The kernel saw the key presses: a positive rotation (ArrowRight = one 1-degree step),
        # the one the page shows (within half a step), and theta changed with it.
        assert 0 < after["rotation"] <= PRESSES + 0.5, after
        assert after["rotation"] == pytest.approx(shown, abs=0.5), f"page shows {shown}, kernel has {after}"
        assert after["params"] != before["params"]
        r = math.radians(after["rotation"])
        assert after["params"][3] == pytest.approx(math.sin(r), abs=0.01), after  # a21 = sin(rotation)
        assert after["log"] == 0 and after["message"] == "", f"the explorer reported a problem: {after}"

        explorer.scroll_into_view_if_needed()
        shot = tmp_path / "theta_explorer.png"
        page.screenshot(path=str(shot))
        print(f"kernel rotation {after['rotation']:.3f} deg (page shows {shown}) after {PRESSES} ArrowRight presses "
              f"in {time.monotonic() - t0:.1f} s; screenshot: {shot}")
    except BaseException:
        _on_failure(page, lab, tmp_path)
        raise


@pytest.mark.xfail(strict=True, reason=(
    "stnviz bug: ThetaExplorer pushes off-grid values (e.g. a12 = -sin 1deg = -0.01745) into "
    "FloatSliders with step 0.01 and continuous_update=True; the browser snaps them to the step "
    "and echoes them back, and the kernel takes the echo for a user edit: theta becomes the rounded "
    "entries and the decomposed sliders drift (rotation 1.146 while the page shows 1.00)"))
def test_rotation_slider_gives_a_pure_rotation(explorer_page, lab, tmp_path):
    """One ArrowRight on the rotation slider from the identity: the kernel's theta is exactly that
    rotation, and kernel and page agree on the angle."""
    page = explorer_page
    try:
        explorer = page.locator(EXPLORER)
        old = _sources(page)
        explorer.locator(".stnviz-identity").click()
        deadline = time.monotonic() + UPDATE_TIMEOUT / 1000
        while (state := _kernel_state(page))["params"] != IDENTITY and time.monotonic() < deadline:
            time.sleep(0.5)
        assert state["params"] == IDENTITY and state["rotation"] == 0.0, state
        readout = explorer.locator(".stnviz-part-rotation .widget-readout")
        page.wait_for_function("(el) => parseFloat(el.textContent) === 0", arg=readout.element_handle(),
                               timeout=UPDATE_TIMEOUT)
        if _sources(page) == old:  # identity after the first test's rotation re-renders
            _wait_new_pictures(page, old)

        old = _sources(page)
        handle = explorer.locator(".stnviz-part-rotation .noUi-handle")
        handle.focus()
        page.keyboard.press("ArrowRight")
        _wait_new_pictures(page, old)
        after, shown = _settled_state(page, readout)
    except BaseException:
        _on_failure(page, lab, tmp_path)
        raise
    assert shown == 1.0
    assert after["rotation"] == pytest.approx(shown, abs=1e-9), f"page shows {shown}, kernel has {after}"
    c, s = math.cos(math.radians(shown)), math.sin(math.radians(shown))
    assert after["params"] == pytest.approx([c, -s, 0.0, s, c, 0.0], abs=1e-9), after
    assert after["parts"]["scale_x"] == pytest.approx(1.0, abs=1e-9), after
