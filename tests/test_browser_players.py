"""The players in a real JupyterLab in a real Chromium (issue 22 item 5): ``TrainingPlayer`` and
``StabilityViewer`` get their frames once and scrub and play in the page. Scrubbing and playing
render nothing in the kernel (its ``frames_rendered`` counter stays put while the page moves), the
picture the page shows for a frame is the kernel's picture for that frame (decoded pixels), the
plot's marker follows the scrub, the kernel hears where the page is (throttled), and a ``frame``
set from Python moves the page. Each widget fits a laptop screen (at most 800 px tall).

Needs /usr/bin/chromium and Playwright (skipped without them; a failure under ``CI=true``).
JupyterLab serves a notebook written into a temp dir (see ``browser_support``). Screenshots of
both players are saved under the test's tmp_path and, when ``STNVIZ_LOOK`` names a folder, there.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import pytest

from browser_support import (  # noqa: F401 (fixture)
    KERNEL_EXEC_JS, browser, jupyterlab, report_failure, require_browser, run_all, write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "players.ipynb"
LOAD_TIMEOUT = 180_000  # ms: page load, kernel start, every cell run (torch import on a busy machine)
UPDATE_TIMEOUT = 60_000  # ms
MAX_HEIGHT = 800  # px: a laptop screen

CELLS = [
    # a recorded "training run": four snapshots of a transformer zooming in
    "import torch\n"
    "import stnviz\n"
    "from stnviz.animate import ProgressRecorder\n"
    "from stnviz.data import GTSRB_CLASS_NAMES, sample, sample_tracks\n"
    "from stnviz.widgets import StabilityViewer, TrainingPlayer\n"
    "torch.manual_seed(0)\n"
    "model = stnviz.get_model('stn_tutorial', device='cpu').eval()\n"
    "rec = ProgressRecorder(sample('mnist').get(torch.arange(4)).images, every=1)\n"
    "for step, s in enumerate([1.0, 0.9, 0.75, 0.6]):\n"
    "    model.transformers[0].set_constant_params(torch.tensor([s, 0, 0.1 * step, 0, s, 0]))\n"
    "    rec.record(model, step * 10)\n"
    "player = TrainingPlayer(rec, columns=2, tile=64)\n"
    "player.root.add_class('stnviz-test-training')\n"
    "player",
    "viewer = StabilityViewer(stnviz.load_pretrained('stn_gtsrb.gtsrb_loc', device='cpu'), sample_tracks()[:2],\n"
    "                         class_names=GTSRB_CLASS_NAMES, prefetch=False)\n"
    "viewer.root.add_class('stnviz-test-stability')\n"
    "viewer",
]

TRAINING = ".stnviz-test-training"
STABILITY = ".stnviz-test-stability"


# FNV-1a of RGB pixels, the same in the kernel and in the page
FNV_CODE = (
    "import html as _html, io as _io, json as _json, re as _re, numpy as _np\n"
    "from PIL import Image as _Image\n"
    "def _fnv(png):\n"
    "    h = 0x811C9DC5\n"
    "    for b in _np.asarray(_Image.open(_io.BytesIO(png)).convert('RGB')).reshape(-1).tobytes():\n"
    "        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF\n"
    "    return h\n"
)
# What the page shows in a player: the frame index, each panel's pixels (hash), the caption's text, the
# marker's first x, the slider's value.
SHOWN_JS = """async (sel) => {
  const root = document.querySelector(sel).querySelector('.stnviz-player');
  const hashes = [];
  for (const img of root.querySelectorAll('img.stnviz-player-frame')) {
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let h = 0x811C9DC5;
    for (let i = 0; i < d.length; i++) {
      if (i % 4 === 3) continue;  // alpha
      h = Math.imul(h ^ d[i], 0x01000193) >>> 0;
    }
    hashes.push(h);
  }
  const line = root.querySelector('.stnviz-player-marker line');
  return {frame: Number(root.dataset.frame), hashes, caption: root.querySelector('.stnviz-player-caption').textContent,
          marker: line ? Number(line.getAttribute('x1')) : null,
          slider: Number(root.querySelector('.stnviz-player-slider').value)};
}"""
# Move a player's slider as a hand does (an input event), to frame t.
SCRUB_JS = """([sel, t]) => {
  const s = document.querySelector(sel).querySelector('.stnviz-player-slider');
  s.value = String(t);
  s.dispatchEvent(new Event('input', {bubbles: true}));
}"""
# ms from a slider input event to the new frame decoded on screen, for each of `frames`.
SCRUB_TIMES_JS = """async ([sel, frames]) => {
  const root = document.querySelector(sel).querySelector('.stnviz-player');
  const s = root.querySelector('.stnviz-player-slider');
  const img = root.querySelector('img.stnviz-player-frame');
  const times = [];
  for (const t of frames) {
    const t0 = performance.now();
    s.value = String(t);
    s.dispatchEvent(new Event('input', {bubbles: true}));
    await img.decode();
    await new Promise(requestAnimationFrame);
    times.push(performance.now() - t0);
  }
  return times;
}"""


def _kernel(page, code: str, timeout_ms: int = UPDATE_TIMEOUT) -> dict:
    res = page.evaluate(KERNEL_EXEC_JS, [NOTEBOOK, code, timeout_ms])
    assert not res["errors"], f"kernel probe failed: {res['errors']}"
    return json.loads(res["stdout"].strip().splitlines()[-1])


def _kernel_frame(page, widget: str, t: int) -> dict:
    """The kernel's pictures (hashes), caption and marker for frame ``t`` of ``widget``, and the
    frame it holds and how many frames it has rendered."""
    return _kernel(page, FNV_CODE + (
        f"_v = {widget}.view\n"
        f"print(_json.dumps({{'hashes': [_fnv(p[{t}]) for p in _v.frames],"
        f" 'caption': _html.unescape(_re.sub('<[^>]+>', '', _v.captions[{t}])),"
        f" 'marker': _v.markers[0][0][{t}] if _v.markers else None, 'frame': _v.frame,"
        f" 'rendered': {widget}.frames_rendered}}))"))


def _wait_kernel_frame(page, widget: str, t: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        k = _kernel(page, f"import json as _json; print(_json.dumps({{'frame': {widget}.view.frame}}))")
        if k["frame"] == t or time.monotonic() > deadline:
            return k
        time.sleep(0.3)


def _shot(page, sel: str, tmp_path: Path, name: str) -> Path:
    loc = page.locator(sel)
    loc.scroll_into_view_if_needed()
    path = tmp_path / name
    loc.screenshot(path=str(path))
    look = os.environ.get("STNVIZ_LOOK")
    if look:
        Path(look).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(look) / name)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_browser()

    work = tmp_path_factory.mktemp("jupyterlab")
    root = work / "notebooks"
    root.mkdir()
    write_notebook(root / NOTEBOOK, CELLS)
    with jupyterlab(root, work / "jupyter") as server:
        yield server


@pytest.fixture(scope="module")
def players(lab, browser, tmp_path_factory):
    """The notebook with every cell run and both players rendered; yields the page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(UPDATE_TIMEOUT)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.stnviz_errors = errors
    t0 = time.monotonic()
    try:
        page.goto(lab.notebook_url(NOTEBOOK), wait_until="domcontentloaded", timeout=LOAD_TIMEOUT)
        run_all(page, NOTEBOOK, LOAD_TIMEOUT)
        for sel in (TRAINING, STABILITY):
            page.wait_for_function(
                """(sel) => { const r = document.querySelector(sel);
                     const imgs = r ? r.querySelectorAll('img.stnviz-player-frame') : [];
                     return imgs.length > 0 && [...imgs].every(i => i.complete && i.naturalWidth > 0); }""",
                arg=sel, timeout=LOAD_TIMEOUT)
        print(f"\nplayers rendered in JupyterLab in {time.monotonic() - t0:.1f} s")
    except BaseException:
        report_failure(page, lab, tmp_path_factory.mktemp("players"), "JupyterLab")
        page.close()
        raise
    yield page
    page.close()


def test_stability_viewer_scrubs_in_the_page(players, lab, tmp_path):
    """Scrub the stability viewer: every frame the page shows is the kernel's picture for it, the
    marker moves to that frame, the kernel renders nothing and hears the last position."""
    page = players
    try:
        before = _kernel_frame(page, "viewer", 0)
        assert before["rendered"] == 30  # the first track, once
        for t in (17, 3, 29, 12):
            page.evaluate(SCRUB_JS, [STABILITY, t])
            shown = page.evaluate(SHOWN_JS, STABILITY)
            want = _kernel_frame(page, "viewer", t)
            assert shown["frame"] == t and shown["slider"] == t
            assert shown["hashes"] == want["hashes"], f"frame {t}: the page's pixels differ from the kernel's"
            assert shown["caption"] == want["caption"] and shown["marker"] == pytest.approx(want["marker"], abs=0.05)
        times = page.evaluate(SCRUB_TIMES_JS, [STABILITY, [(i * 7) % 30 for i in range(1, 41)]])
        after = _wait_kernel_frame(page, "viewer", (40 * 7) % 30)
        assert after["frame"] == (40 * 7) % 30, "the kernel never heard where the page stopped"
        rendered = _kernel(page, "import json as _json; print(_json.dumps(viewer.frames_rendered))")
        assert rendered == 30, f"scrubbing rendered {rendered - 30} frames in the kernel"
        print(f"stability scrub, input event to frame on screen: median {statistics.median(times):.1f} ms, "
              f"max {max(times):.1f} ms over {len(times)} steps; kernel frames rendered: {rendered}")
        assert not page.stnviz_errors, page.stnviz_errors
    except BaseException:
        report_failure(page, lab, tmp_path, "JupyterLab")
        raise


def test_stability_viewer_plays_and_follows_python(players, lab, tmp_path):
    """Play at 4x from frame 20 to the end: the page advances by itself, the kernel hears the end
    and renders nothing; a frame set from Python moves the page; a track change sends the new
    track's frames once."""
    page = players
    try:
        root = page.locator(STABILITY)
        page.evaluate(SCRUB_JS, [STABILITY, 20])
        root.locator(".stnviz-player-speed").select_option("4")
        root.locator(".stnviz-player-play").click()
        page.wait_for_function(
            """(sel) => { const r = document.querySelector(sel).querySelector('.stnviz-player');
                 return Number(r.dataset.frame) === 29 && !r.classList.contains('stnviz-playing'); }""",
            arg=STABILITY, timeout=UPDATE_TIMEOUT)
        assert _wait_kernel_frame(page, "viewer", 29)["frame"] == 29
        shown, want = page.evaluate(SHOWN_JS, STABILITY), _kernel_frame(page, "viewer", 29)
        assert shown["hashes"] == want["hashes"] and want["rendered"] == 30

        _kernel(page, "viewer.frame = 5; print(1)")
        page.wait_for_function("(sel) => document.querySelector(sel).querySelector('.stnviz-player').dataset.frame"
                               " === '5'", arg=STABILITY)
        assert page.evaluate(SHOWN_JS, STABILITY)["hashes"] == _kernel_frame(page, "viewer", 5)["hashes"]

        old = root.locator("img.stnviz-player-frame").first.get_attribute("src")
        t0 = time.monotonic()
        root.locator(".stnviz-track select").select_option(index=1)
        page.wait_for_function(
            """([sel, old]) => { const img = document.querySelector(sel).querySelector('img.stnviz-player-frame');
                 return img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0; }""",
            arg=[STABILITY, old])
        cold = time.monotonic() - t0
        shown, want = page.evaluate(SHOWN_JS, STABILITY), _kernel_frame(page, "viewer", 5)
        assert shown["frame"] == 5 and shown["hashes"] == want["hashes"] and want["rendered"] == 60
        print(f"cold track change, select to new frame on screen: {cold * 1000:.0f} ms")
        _shot(page, STABILITY, tmp_path, "stability_viewer.png")
        assert not page.stnviz_errors, page.stnviz_errors
    except BaseException:
        report_failure(page, lab, tmp_path, "JupyterLab")
        raise


def test_training_player_scrubs_and_plays(players, lab, tmp_path):
    """The training player: scrub to each step (the kernel's picture for it, nothing composed in the
    kernel), play from the start to the last step."""
    page = players
    try:
        for t in (2, 0, 3):
            page.evaluate(SCRUB_JS, [TRAINING, t])
            shown, want = page.evaluate(SHOWN_JS, TRAINING), _kernel_frame(page, "player", t)
            assert shown["frame"] == t and shown["hashes"] == want["hashes"] and shown["caption"] == want["caption"]
        page.evaluate(SCRUB_JS, [TRAINING, 0])
        page.locator(TRAINING).locator(".stnviz-player-play").click()
        page.wait_for_function(
            "(sel) => document.querySelector(sel).querySelector('.stnviz-player').dataset.frame === '3'",
            arg=TRAINING, timeout=UPDATE_TIMEOUT)
        final = _wait_kernel_frame(page, "player", 3)
        assert final["frame"] == 3
        assert _kernel(page, "import json as _json; print(_json.dumps(player.frames_rendered))") == 4
        _shot(page, TRAINING, tmp_path, "training_player.png")
        assert not page.stnviz_errors, page.stnviz_errors
    except BaseException:
        report_failure(page, lab, tmp_path, "JupyterLab")
        raise


def test_players_fit_a_laptop_screen(players):
    """Each player is at most 800 px tall (and its long names are not cut: nothing overflows)."""
    page = players
    for sel in (TRAINING, STABILITY):
        box = page.locator(sel).bounding_box()
        assert box["height"] <= MAX_HEIGHT, f"{sel} is {box['height']:.0f} px tall"
        cut = page.evaluate("""(sel) => [...document.querySelector(sel).querySelectorAll('select, .stnviz-player-title')]
                                 .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.slice(0, 60))""",
                            sel)
        assert not cut, f"{sel}: cut names {cut}"
        print(f"{sel}: {box['width']:.0f} x {box['height']:.0f} px")
