"""The Voila dashboard (``make dashboard``) in a real Chromium: the page builds the theta explorer,
the inspectors and the signs' stability viewer, a key press on the rotation slider reaches the
kernel, and the kernel's re-rendered pictures reach the page; the inspectors speak in words, the
viewer plays, and no widget is taller than a laptop screen.

Needs /usr/bin/chromium and Playwright (skipped without them; a failure under ``CI=true``).
Voila serves a temp-dir copy of ``notebooks/dashboard.ipynb`` on a free ``127.0.0.1`` port with a
random token, with Jupyter's config / data / runtime folders in a temp dir, so nothing is read
from or written to the repository or the user's Jupyter folders. Voila starts a kernel on every GET
of the page, so readiness is probed with a TCP connect, never an HTTP GET. Voila and its kernels
are shut down when the module's tests end, also when one failed. Screenshots of the explorer and
the inspector are saved under the test's tmp_path.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex
from typing import Iterator

import pytest

from browser_support import (  # noqa: F401 (browser is a fixture)
    browser, free_port, isolated_jupyter_env, report_failure, require_browser, wait_until_serving,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "dashboard.ipynb"
STARTUP_TIMEOUT = 120.0  # s: Voila listening on its port
LOAD_TIMEOUT = 180_000  # ms: page GET (Voila runs every cell first: kernel start, torch import) + widgets
UPDATE_TIMEOUT = 60_000  # ms: one widget round trip on a busy machine
CULL_IDLE, CULL_INTERVAL = 4, 2  # s: a closed tab's kernel is shut down this soon in the test
REPO = Path(__file__).resolve().parent.parent
MAKEFILE = REPO / "Makefile"

EXPLORER = ".stnviz-theta-explorer"
EXPLORER_VIEW = ".stnviz-theta-explorer .stnviz-explorer"  # the page of the explorer (anywidget)
INSPECTOR = ".stnviz-inspector:not(.stnviz-signs)"  # the digits' inspector
SIGNS = ".stnviz-inspector.stnviz-signs"  # the traffic signs' inspector (stn_gtsrb.gtsrb_loc)
STABILITY = ".stnviz-stability-viewer"  # the signs' tracks, a player
MAX_HEIGHT = 800  # px: no widget taller than a laptop screen

# The pictures and readouts of one widget, found inside its root (the inspector also has
# .stnviz-input / .stnviz-output images). An Image widget renders as <img class="... stnviz-input">;
# `.stnviz-input img` is accepted too, should it ever be wrapped.
STATE_JS = """(sel) => {
  const root = document.querySelector(sel);
  if (!root) return null;
  const src = (cls) => {
    const el = root.querySelector(`img.${cls}, .${cls} img`);
    return el ? el.getAttribute('src') : null;
  };
  const text = (s) => { const el = root.querySelector(s); return el ? el.textContent.trim() : null; };
  return {input: src('stnviz-input'), output: src('stnviz-output'),
          rotation: text('.stnviz-part-rotation_deg .widget-readout'), a21: text('.stnviz-theta-3 .widget-readout'),
          theta: text('.stnviz-theta')};
}"""

# The explorer has drawn its output in the page (it writes its parameters on its root at each repaint).
EXPLORER_READY_JS = """() => { const r = document.querySelector('.stnviz-theta-explorer .stnviz-explorer');
  return !!r && !!r.dataset.params && !!r.querySelector('canvas.stnviz-output'); }"""
# What the explorer's page shows: its parameters, the numbers and the model's answer.
EXPLORER_STATE_JS = """(sel) => { const r = document.querySelector(sel);
  if (!r) return null;
  const text = (s) => { const el = r.querySelector(s); return el ? el.textContent.trim() : null; };
  return {params: JSON.parse(r.dataset.params || 'null'), numbers: text('.stnviz-theta'),
          prediction: text('.stnviz-prediction'), ghost: r.querySelector('.stnviz-ghost').getAttribute('points')}; }"""

# Both pictures of a widget rendered by the kernel (an ipywidgets Image shows a blob: URL).
RENDERED_JS = """([sel, state]) => { const s = (%s)(sel);
  return !!s && !!s.input && !!s.output && s.input.startsWith('blob:') && s.output.startsWith('blob:'); }""" % STATE_JS

# Anything on the page that reports a problem: a widget message or log line, a cell's error or
# stderr output (Voila shows those in place of the cell), a traceback.
PROBLEMS_JS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('.stnviz-message')) {
    const t = el.textContent.trim();
    if (t) out.push('message: ' + t);
  }
  for (const el of document.querySelectorAll('.stnviz-log')) {
    const t = el.textContent.trim();
    if (t) out.push('log: ' + t.slice(0, 500));
  }
  for (const el of document.querySelectorAll(
      '[data-mime-type="application/vnd.jupyter.stderr"], [data-mime-type="application/vnd.jupyter.error"]')) {
    out.push('cell output: ' + el.textContent.trim().slice(0, 500));
  }
  if (document.body.innerText.includes('Traceback')) out.push('a traceback is shown on the page');
  return out;
}"""


# ---------------------------------------------------------------------------------- Voila server
@dataclass
class Voila:
    url: str  # http://127.0.0.1:PORT/?token=...
    log: Path  # the server's combined stdout / stderr
    process: subprocess.Popen
    kernels: dict = field(default_factory=dict)  # pid -> start time, of the kernels seen

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, from /proc; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[19]


def _note_kernels(server: Voila) -> None:
    """Remember Voila's child processes (its kernels: they run in sessions of their own, so
    killing Voila's process group would not reach them)."""
    if not os.path.isdir("/proc"):
        return
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None and st[0] == server.process.pid:
                server.kernels[int(entry)] = st[1]


def _stop(server: Voila) -> None:
    proc = server.process
    _note_kernels(server)
    if proc.poll() is None:
        proc.terminate()  # Voila handles SIGTERM: it shuts its kernels down, then exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    try:  # anything else Voila started in its own process group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    # Kernels that outlived Voila: end them by pid (checking the pid was not reused).
    deadline = time.monotonic() + 10
    for pid, started in server.kernels.items():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            st = _proc_stat(pid)
            if st is None or st[1] != started:
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            while time.monotonic() < deadline and (_proc_stat(pid) or (0, None))[1] == started:
                time.sleep(0.2)


@contextmanager
def voila(notebook: Path, work_dir: Path, *, startup_timeout: float = STARTUP_TIMEOUT) -> Iterator[Voila]:
    """Serve a copy of ``notebook`` with Voila on 127.0.0.1; Jupyter's folders go under ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    served = work_dir / "notebooks"
    served.mkdir(exist_ok=True)
    shutil.copy2(notebook, served / notebook.name)
    env = isolated_jupyter_env(work_dir)
    env["JUPYTER_PATH"] = str(REPO / "share" / "jupyter")  # the stnviz Voila template, as `make dashboard`

    port, token = free_port(), token_hex(16)
    env["JUPYTER_TOKEN"] = token  # as `make dashboard` (scripts/serve.py): never on the command line
    cmd = [
        sys.executable, "-m", "voila", str(served / notebook.name),
        "--template=stnviz",
        "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}", "--Voila.port_retries=0", "--Voila.auto_token=True",
        "--show_tracebacks=True",  # a failing cell shows its traceback (caught below), not a generic line
        # as `make dashboard` (see test_make_dashboard_culls_kernels), with short times for the test
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE}", f"--MappingKernelManager.cull_interval={CULL_INTERVAL}",
        f"--Voila.connection_dir_root={work_dir / 'runtime'}",
    ]
    log = work_dir / "voila.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=served, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Voila(f"http://127.0.0.1:{port}/?token={token}", log, proc)
    try:
        def listening() -> bool:  # a TCP connect only: a GET of the page would start a kernel
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True

        wait_until_serving(server, listening, "Voila", startup_timeout, 0.3)
        yield server
    finally:
        _stop(server)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    with voila(NOTEBOOK, tmp_path_factory.mktemp("voila")) as s:
        yield s


def _on_failure(page, server: Voila, directory: Path) -> None:
    report_failure(page, server, directory, "Voila")


@pytest.fixture(scope="module")
def dashboard(server, browser, tmp_path_factory):
    """The dashboard page with both widgets rendered; yields (page, uncaught page errors).
    Every request the page makes and every console error are kept on ``page.stnviz_requests`` /
    ``page.stnviz_console``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(UPDATE_TIMEOUT)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.stnviz_requests, page.stnviz_console = [], []
    page.on("request", lambda r: page.stnviz_requests.append(r.url))
    page.on("console", lambda m: m.type == "error" and page.stnviz_console.append(m.text))
    t0 = time.monotonic()
    try:
        # Voila runs every cell before the page is complete; the widgets then render in the browser.
        page.goto(server.url, wait_until="domcontentloaded", timeout=LOAD_TIMEOUT)
        page.wait_for_selector(EXPLORER, timeout=LOAD_TIMEOUT)
        page.wait_for_function(EXPLORER_READY_JS, timeout=LOAD_TIMEOUT)
        page.wait_for_function(RENDERED_JS, arg=[INSPECTOR, None], timeout=LOAD_TIMEOUT)
        page.wait_for_function(RENDERED_JS, arg=[SIGNS, None], timeout=LOAD_TIMEOUT)
        page.wait_for_function(PLAYER_READY_JS, arg=STABILITY, timeout=LOAD_TIMEOUT)
        _note_kernels(server)
        print(f"\ndashboard rendered in {time.monotonic() - t0:.1f} s")
    except BaseException:
        _on_failure(page, server, tmp_path_factory.mktemp("dashboard"))
        page.close()
        raise
    yield page, errors
    page.close()


# A player's pictures are on the page (frames sent once, shown from blob: URLs).
PLAYER_READY_JS = """(sel) => { const r = document.querySelector(sel);
  const imgs = r ? r.querySelectorAll('img.stnviz-player-frame') : [];
  return imgs.length > 0 && [...imgs].every(i => i.complete && i.naturalWidth > 0); }"""


def _look(path: Path) -> None:
    """A copy of a screenshot in $STNVIZ_LOOK, when set (to look at)."""
    look = os.environ.get("STNVIZ_LOOK")
    if look:
        Path(look).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(look) / path.name)


def _state(page, sel: str = EXPLORER) -> dict:
    return page.evaluate(STATE_JS, sel)


# ---------------------------------------------------------------------------------- tests
def test_explorer_drag_in_the_dashboard(dashboard, server, tmp_path):
    """The explorer opens on the learned zoom of the first digit (a ghost outline of it, the
    model's answer beside it); a mouse drag of the region moves the page's output at once and the
    kernel answers with the model's prediction for the new region; nothing on the page complains."""
    page, errors = dashboard
    t0 = time.monotonic()
    try:
        root = page.locator(EXPLORER_VIEW)
        root.scroll_into_view_if_needed()
        page.wait_for_function("(sel) => !!document.querySelector(sel + ' .stnviz-pred-row')", arg=EXPLORER_VIEW)
        before = page.evaluate(EXPLORER_STATE_JS, EXPLORER_VIEW)
        p = before["params"]
        assert abs(p[0] * p[4] - p[1] * p[3]) < 0.64, f"it does not open on a zoom: {before}"  # learned
        assert before["ghost"], "no ghost outline of the learned theta"
        box = root.locator(".stnviz-region").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 14, y + 10, steps=3)  # grabbed: the region just off its learned place
        grab = tmp_path / "dashboard_explorer_grab.png"  # the README gallery's picture
        root.screenshot(path=str(grab))
        _look(grab)
        page.mouse.move(x + 70, y + 50, steps=10)
        shot = tmp_path / "dashboard_explorer_drag.png"
        root.screenshot(path=str(shot))  # the hand still down
        _look(shot)
        page.mouse.up()
        after = page.evaluate(EXPLORER_STATE_JS, EXPLORER_VIEW)
        assert after["params"][2] > p[2] + 0.2 and after["params"][5] > p[5] + 0.2, (before, after)
        page.wait_for_function(  # the kernel's answer for the new region
            "([sel, old]) => { const el = document.querySelector(sel + ' .stnviz-prediction');"
            " return !!el && el.textContent.trim() !== old; }",
            arg=[EXPLORER_VIEW, before["prediction"]], timeout=UPDATE_TIMEOUT)
        height = root.bounding_box()["height"]
        assert height <= MAX_HEIGHT, f"the explorer is {height:.0f} px tall"
        text = root.text_content()
        assert "align_corners" not in text and "body." not in text, text
        problems = page.evaluate(PROBLEMS_JS)
        assert not problems, f"the page reports problems: {problems}"
        assert not errors, f"uncaught errors in the page: {errors}"
        print(f"dragged in {time.monotonic() - t0:.1f} s: {after['params']}; "
              f"prediction {page.evaluate(EXPLORER_STATE_JS, EXPLORER_VIEW)['prediction']!r}; screenshot: {shot}")
    except BaseException:
        _on_failure(page, server, tmp_path)
        raise


def test_inspector_rendered_without_errors(dashboard, server, tmp_path):
    """The inspector shows its pictures, a prediction and a theta table; nothing on the page
    reports an error."""
    page, errors = dashboard
    try:
        inspector = page.locator(INSPECTOR)
        state = _state(page, INSPECTOR)
        assert state["input"].startswith("blob:") and state["output"].startswith("blob:"), state
        info = inspector.locator(".stnviz-info").text_content()
        assert "prediction" in info and "true" in info, f"inspector info: {info!r}"
        assert inspector.locator(".stnviz-table table").count() == 1, "the inspector shows no theta table"
        problems = page.evaluate(PROBLEMS_JS)
        assert not problems, f"the page reports problems: {problems}"
        assert not errors, f"uncaught errors in the page: {errors}"

        inspector.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        shot = tmp_path / "dashboard_inspector.png"
        page.screenshot(path=str(shot))
        _look(shot)
        print(f"inspector: {' '.join(info.split())}; screenshot: {shot}")
    except BaseException:
        _on_failure(page, server, tmp_path)
        raise


def test_sign_inspector_shows_the_localising_model(dashboard, server, tmp_path):
    """The traffic-sign section: stn_gtsrb.gtsrb_loc's inspector with a sign name as its
    prediction and the true sign beside it."""
    page, errors = dashboard
    try:
        signs = page.locator(SIGNS)
        state = _state(page, SIGNS)
        assert state["input"].startswith("blob:") and state["output"].startswith("blob:"), state
        info = " ".join(signs.locator(".stnviz-info").text_content().split())
        assert "prediction: speed limit 20" in info and "true: speed limit 20" in info, f"sign inspector info: {info!r}"
        assert not errors, f"uncaught errors in the page: {errors}"
        signs.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        shot = tmp_path / "dashboard_signs.png"
        page.screenshot(path=str(shot))
        _look(shot)
        print(f"signs: {info}; screenshot: {shot}")
    except BaseException:
        _on_failure(page, server, tmp_path)
        raise


def test_inspectors_speak_to_people(dashboard, server):
    """Issue 22 item 4: the inspectors name transformers and settings in words (no code names
    such as ``body.1``, no ``align_corners``, no bare family / role columns), every picture has a
    title, and each inspector fits a laptop screen."""
    page, _ = dashboard
    for sel in (INSPECTOR, SIGNS):
        root = page.locator(sel)
        text = root.inner_text()
        for code in ("body.1", "align_corners", "padding_mode"):
            assert code not in text, f"{sel} shows {code!r}: {text[:400]}"
        headings = [h.strip() for h in root.locator(".stnviz-table th").all_inner_texts()]
        assert headings and "family" not in headings and "role" not in headings, headings
        assert "what the transformer passes on" in text and "the region the transformer samples" in text
        options = [o.replace("\xa0", " ") for o in root.locator(".stnviz-which select option").all_inner_texts()]
        assert options and all(o.startswith(("the transformer, ", "transformer ")) for o in options), options
        height = root.bounding_box()["height"]
        assert height <= MAX_HEIGHT, f"{sel} is {height:.0f} px tall"
        print(f"{sel}: {height:.0f} px tall; transformers: {options}")


def test_stability_viewer_plays(dashboard, server, tmp_path):
    """The signs' stability viewer plays in the page (at 4x): the frame moves on by itself and
    the plot's marker follows; it fits a laptop screen, and its long sign names are not cut."""
    page, errors = dashboard
    try:
        root = page.locator(STABILITY)
        root.scroll_into_view_if_needed()
        player = root.locator(".stnviz-player")
        start, marker = int(player.get_attribute("data-frame")), root.locator(".stnviz-player-marker line").first
        x0 = float(marker.get_attribute("x1"))
        root.locator(".stnviz-player-speed").select_option("4")
        root.locator(".stnviz-player-play").click()
        page.wait_for_function(
            """([sel, start]) => Number(document.querySelector(sel).querySelector('.stnviz-player').dataset.frame)
                                 >= start + 5""", arg=[STABILITY, start], timeout=UPDATE_TIMEOUT)
        root.locator(".stnviz-player-play").click()  # pause
        assert float(marker.get_attribute("x1")) > x0, "the marker did not follow the frame"
        height = root.bounding_box()["height"]
        assert height <= MAX_HEIGHT, f"the stability viewer is {height:.0f} px tall"
        select = root.locator(".stnviz-track select")
        assert select.evaluate("(s) => s.scrollWidth <= s.clientWidth + 1"), "the track names are cut"
        assert not errors, f"uncaught errors in the page: {errors}"
        shot = tmp_path / "dashboard_stability.png"
        root.screenshot(path=str(shot))
        _look(shot)
        print(f"played from frame {start} to {player.get_attribute('data-frame')}; {height:.0f} px tall; {shot}")
    except BaseException:
        _on_failure(page, server, tmp_path)
        raise


def _foreign_requests(page, server) -> list[str]:
    host = server.url.split("/?", 1)[0]
    assert page.stnviz_requests, "no request was recorded"
    return [u for u in page.stnviz_requests if not (u.startswith(host) or u.startswith(("data:", "blob:")))]


def test_offline_page_no_cdn(dashboard, server):
    """Every request of the page goes to the Voila server: nothing from a CDN, the page works
    offline (the stnviz template drops the lab template's two Font Awesome links)."""
    page, _ = dashboard
    foreign = _foreign_requests(page, server)
    assert not foreign, f"requests to other hosts: {foreign}"
    print(f"{len(page.stnviz_requests)} requests, all to the Voila server")


def test_no_console_errors(dashboard, server):
    """The browser console logged no error."""
    page, _ = dashboard
    assert not page.stnviz_console, f"console errors: {page.stnviz_console}"


def test_page_needs_the_token(server):
    """The token reaches Voila through JUPYTER_TOKEN (as `make dashboard` passes it): without it the
    page is refused, with it served."""
    import urllib.error
    import urllib.request

    bare = server.url.split("?", 1)[0]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(bare, timeout=30)
    assert refused.value.code in (302, 401, 403), refused.value.code
    assert "/login" in (refused.value.headers.get("Location") or "/login")


def test_make_dashboard_serves_the_offline_template():
    target = MAKEFILE.read_text().split("\ndashboard:", 1)[1].split("\n\n", 1)[0]
    assert "--template=stnviz" in target and "JUPYTER_PATH='$(CURDIR)/share/jupyter'" in target
    assert (REPO / "share/jupyter/voila/templates/stnviz/index.html.j2").is_file()


def _kernels(server: Voila) -> set[int]:
    """Voila's live child processes (its kernels)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None and st[0] == server.process.pid:
                out.add(int(entry))
    return out


def test_make_dashboard_culls_kernels():
    """`make dashboard` runs Voila with kernel culling (closed tabs do not pile up kernels)."""
    target = MAKEFILE.read_text().split("\ndashboard:", 1)[1].split("\n\n", 1)[0]
    assert "--MappingKernelManager.cull_idle_timeout=" in target and "--MappingKernelManager.cull_interval=" in target


def test_closed_tab_kernel_is_culled(dashboard, server, browser):
    """A second visit starts a kernel; closing its tab lets Voila shut that kernel down."""
    require_browser()
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc to see Voila's kernels")
    before = _kernels(server)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    try:
        page.goto(server.url, wait_until="domcontentloaded", timeout=LOAD_TIMEOUT)
        page.wait_for_function(EXPLORER_READY_JS, timeout=LOAD_TIMEOUT)
        _note_kernels(server)
        opened = _kernels(server) - before
        assert len(opened) == 1, f"the visit started {len(opened)} kernels"
    finally:
        page.close()
    deadline = time.monotonic() + CULL_IDLE + CULL_INTERVAL + 60
    while _kernels(server) & opened:
        assert time.monotonic() < deadline, "the closed tab's kernel is still running"
        time.sleep(1)
    assert before <= _kernels(server) | set(), "the first tab's kernel was culled too"
    print(f"kernel {opened} culled after its tab closed")
