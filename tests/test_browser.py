"""The theta explorer in a real JupyterLab in a real Chromium: a key press on a slider reaches the
kernel, and the kernel's re-rendered pictures reach the page.

Needs /usr/bin/chromium and Playwright (skipped without them; a failure under ``CI=true``).
JupyterLab serves a temp-dir copy of notebooks/ (see ``browser_support``), so nothing is written
into the repository. A screenshot of the explorer is saved under the test's tmp_path.

``test_quick_presses_settle_on_a_pure_rotation`` guards against slider feedback: the browser snaps
pushed values to the slider step and echoes them back, which once made theta drift.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from browser_support import browser, copy_notebooks, jupyterlab, report_failure, require_browser  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = "02_theta_explorer.ipynb"
LOAD_TIMEOUT = 120_000  # ms: page load, kernel start, run all cells (torch import on a busy machine)
UPDATE_TIMEOUT = 60_000  # ms: one widget round trip
PRESSES = 3

# The notebook panel showing NOTEBOOK, found by path (not "whatever is focused").
PANEL_JS = """(name) => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === name && w.sessionContext) return w;
  }
  return null;
}"""

# page.evaluate has no timeout of its own: every promise awaited in the page is raced against one.
WITH_TIMEOUT_JS = """(promise, ms, what) => Promise.race([promise, new Promise((_, reject) =>
  setTimeout(() => reject(new Error(what + ' timed out after ' + ms + ' ms')), ms))])"""

# Run code in the notebook's kernel through JupyterLab's own connection (no cell is added);
# returns {stdout, errors}.
KERNEL_EXEC_JS = """async ([name, code, ms]) => {
  const panel = (%s)(name);
  const kernel = panel.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  const out = {stdout: '', errors: []};
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === 'stream' && msg.content.name === 'stdout') out.stdout += msg.content.text;
    if (t === 'error') out.errors.push(msg.content.ename + ': ' + msg.content.evalue);
  };
  const reply = await (%s)(future.done, ms, 'kernel request');
  if (reply.content.status !== 'ok') out.errors.push('status ' + reply.content.status);
  return out;
}""" % (PANEL_JS, WITH_TIMEOUT_JS)

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


def _kernel_state(page, timeout_ms: int = UPDATE_TIMEOUT) -> dict:
    res = page.evaluate(KERNEL_EXEC_JS, [NOTEBOOK, STATE_CODE, timeout_ms])
    assert not res["errors"], f"kernel probe failed: {res['errors']}"
    return json.loads(res["stdout"].strip().splitlines()[-1])


def _settled_state(page, readout, timeout: float = 30.0) -> tuple[dict, float, bool]:
    """(kernel state, page readout, settled): settled once neither changed over 1 s (widget
    messages are throttled and may trickle in after the first re-render); else the last values
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    history: list = []
    while True:
        time.sleep(0.5)
        history.append((_kernel_state(page), float(readout.text_content().replace("\u2212", "-"))))
        if len(history) >= 3 and history[-1] == history[-2] == history[-3]:
            return (*history[-1], True)
        if time.monotonic() > deadline:
            return (*history[-1], False)


def _reset_to_identity(page, explorer, readout) -> None:
    explorer.locator(".stnviz-identity").click()
    deadline = time.monotonic() + UPDATE_TIMEOUT / 1000
    while True:
        state = _kernel_state(page)
        shown = float(readout.text_content().replace("\u2212", "-"))
        if (state["params"] == IDENTITY and state["rotation"] == 0.0 and shown == 0.0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state["params"] == IDENTITY and state["rotation"] == 0.0 and shown == 0.0, (state, shown)


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
    report_failure(page, lab, directory, "JupyterLab")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_browser()
    work = tmp_path_factory.mktemp("jupyterlab")
    root = copy_notebooks(NOTEBOOKS, work / "notebooks")
    with jupyterlab(root, work / "jupyter") as server:
        yield server


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
            """async ([name, ms]) => {
                 const panel = (%s)(name);
                 const withTimeout = %s;
                 await withTimeout(Promise.all([panel.context.ready, panel.sessionContext.ready]), ms, 'kernel start');
                 window.jupyterapp.shell.activateById(panel.id);
                 // resolves when every cell has run
                 await withTimeout(window.jupyterapp.commands.execute('notebook:run-all-cells'), ms, 'run all cells');
               }""" % (PANEL_JS, WITH_TIMEOUT_JS),
            [NOTEBOOK, LOAD_TIMEOUT],
        )
        # The explorer is on the page with both pictures rendered by the kernel.
        page.wait_for_function(
            f"() => {{ const s = ({SOURCES_JS})({json.dumps(EXPLORER)});"
            " return !!s && [s.input, s.output].every(v => v && v.startsWith('blob:')); }",
            timeout=LOAD_TIMEOUT,
        )
        _kernel_state(page, LOAD_TIMEOUT)  # queued behind run-all: returns once every cell has run
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
    """ArrowRight on the rotation slider, one press at a time (waiting for each round trip, as a
    person would): the pictures change and the kernel holds the rotation the page shows."""
    page = explorer_page
    t0 = time.monotonic()
    try:
        explorer = page.locator(EXPLORER)
        readout = explorer.locator(".stnviz-part-rotation .widget-readout")
        handle = explorer.locator(".stnviz-part-rotation .noUi-handle")
        _reset_to_identity(page, explorer, readout)
        before = _kernel_state(page)
        handle.scroll_into_view_if_needed()
        for press in range(1, PRESSES + 1):
            old = _sources(page)
            handle.focus()
            page.keyboard.press("ArrowRight")
            _wait_new_pictures(page, old)  # both pictures re-rendered by the kernel, replaced on the page
            after, shown, settled = _settled_state(page, readout)
            assert settled, f"press {press}: the explorer kept changing: kernel {after}, page {shown}"
            assert shown == float(press), f"press {press}: the page shows {shown}"  # one 1-degree step per press
            # The kernel saw it: the rotation the page shows (within half a step; see the settle test
            # test below for why not exactly), and theta rotated with it.
            assert after["rotation"] == pytest.approx(shown, abs=0.5), f"page shows {shown}, kernel has {after}"
            r = math.radians(after["rotation"])
            assert after["params"][3] == pytest.approx(math.sin(r), abs=0.01), after  # a21 = sin(rotation)
        assert after["params"] != before["params"] and after["rotation"] != before["rotation"]
        assert after["log"] == 0 and after["message"] == "", f"the explorer reported a problem: {after}"

        explorer.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        shot = tmp_path / "theta_explorer.png"
        page.screenshot(path=str(shot))
        print(f"kernel rotation {after['rotation']:.3f} deg (page shows {shown}) after {PRESSES} ArrowRight presses "
              f"in {time.monotonic() - t0:.1f} s; screenshot: {shot}")
    except BaseException:
        _on_failure(page, lab, tmp_path)
        raise


def test_quick_presses_settle_on_a_pure_rotation(explorer_page, lab, tmp_path):
    """Five quick ArrowRight presses from the identity: the explorer settles, kernel and page agree
    on the angle, and theta is exactly that rotation."""
    page = explorer_page
    try:
        explorer = page.locator(EXPLORER)
        readout = explorer.locator(".stnviz-part-rotation .widget-readout")
        _reset_to_identity(page, explorer, readout)
        old = _sources(page)
        handle = explorer.locator(".stnviz-part-rotation .noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        _wait_new_pictures(page, old)
        after, shown, settled = _settled_state(page, readout, timeout=8.0)
    except BaseException:
        _on_failure(page, lab, tmp_path)
        raise
    assert settled, f"the explorer kept changing: kernel {after}, page {shown}"
    assert after["rotation"] == pytest.approx(shown, abs=1e-9), f"page shows {shown}, kernel has {after}"
    c, s = math.cos(math.radians(shown)), math.sin(math.radians(shown))
    assert after["params"] == pytest.approx([c, -s, 0.0, s, c, 0.0], abs=1e-9), after
    assert after["parts"]["scale_x"] == pytest.approx(1.0, abs=1e-9), after
