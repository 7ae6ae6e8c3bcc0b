"""Support for the real-browser tests: a private JupyterLab server and Chromium through Playwright.

* :func:`require_browser` skips a test when Chromium or Playwright is missing, and fails it instead
  when ``CI=true`` (CI installs Chromium, so a missing browser there is a broken setup, not a skip).
* :func:`jupyterlab` serves a folder on ``127.0.0.1`` (a free port, a random token) with autosave,
  news and update checks off, and Jupyter's config / data / runtime / settings / workspace folders
  in a temp dir, so the test neither reads nor writes the user's. Serve a *copy* of the notebooks:
  JupyterLab may still write ``.ipynb_checkpoints`` next to what it serves. The server and its
  kernels are shut down on exit, also when the test failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
# Launch arguments that work on a headless root machine (Playwright makes its own profile dir).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# User settings written into the private settings dir: no autosave (nothing is written while the
# test runs), no news or update pop-ups, and every cell rendered (no windowed notebook).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def require_browser() -> None:
    """Skip unless /usr/bin/chromium and Playwright are both there; under ``CI=true``, fail."""
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} not found (install it: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        missing.append(f"playwright is not importable ({e}); pip install playwright")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run under CI=true: {reason}", pytrace=False)
        pytest.skip(reason)


def isolated_jupyter_env(work_dir: Path) -> dict:
    """The environment for a Jupyter server whose config, data, runtime and IPython folders all
    live under ``work_dir`` (nothing is written to the user's home)."""
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("IPYTHONDIR", "ipython")):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(work_dir / sub)
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    return env


@pytest.fixture(scope="module")
def browser():
    """A headless Debian Chromium driven by Playwright (skips, or fails under CI=true, without it)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


def report_failure(page, server, directory: Path, what: str) -> None:
    """On a failed browser test: a screenshot beside the test's files and the server's log tail."""
    try:
        failure = directory / "failure.png"
        page.screenshot(path=str(failure), timeout=10_000)
        print(f"screenshot of the failure: {failure}")
    except Exception as e:  # the page may be gone
        print(f"(no failure screenshot: {e})")
    print(f"{what} log tail:\n{server.log_tail()}")


def wait_until_serving(server, ready, what: str, timeout: float, interval: float) -> None:
    """Poll ``ready()`` until it is true. Raises, with the tail of ``server``'s log, if the server's
    process exits first or ``timeout`` seconds pass. ``ready`` may raise ``OSError`` (not up yet)."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {server.process.returncode}:\n{server.log_tail()}")
        try:
            if ready():
                return
        except OSError:  # includes urllib.error.URLError
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the served folder
    log: Path  # the server's combined stdout / stderr
    process: subprocess.Popen

    def notebook_url(self, name: str) -> str:
        # ?reset: a fresh workspace, so JupyterLab does not reopen (and activate) the notebook
        # an earlier test had open while this one is being run
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"


def _request(url: str, token: str, method: str = "GET", timeout: float = 5.0) -> int:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"},
                                 data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


def _stop(lab: Lab) -> None:
    proc = lab.process
    if proc.poll() is None:
        try:  # the clean way: the server shuts its kernels down, then exits
            _request(f"{lab.url}/api/shutdown", lab.token, method="POST", timeout=10)
        except (urllib.error.URLError, OSError):
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
    # Kernels left behind by a server that died: they are in the server's own process group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def jupyterlab(root_dir: Path, work_dir: Path, *, startup_timeout: float = 120.0) -> Iterator[Lab]:
    """Run JupyterLab serving ``root_dir``; Jupyter's own folders go under ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = work_dir / "user-settings"
    for rel, value in LAB_SETTINGS.items():
        f = settings / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    env = isolated_jupyter_env(work_dir)

    port, token = free_port(), token_hex(16)
    env["JUPYTER_TOKEN"] = token  # as `make lab` (scripts/serve.py): never on the command line
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={work_dir / 'workspaces'}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = work_dir / "jupyterlab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, Path(root_dir), log, proc)
    try:
        wait_until_serving(lab, lambda: _request(f"{lab.url}/api/status", token, timeout=5) == 200,
                           "JupyterLab", startup_timeout, 0.5)
        yield lab
    finally:
        _stop(lab)


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook of code ``cells`` (unrun, Python 3 kernel) at ``path``."""
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                     "source": c} for c in cells],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def copy_notebooks(src: Path, dst: Path) -> Path:
    """A copy of the ``*.ipynb`` files of ``src`` in ``dst`` (created), for JupyterLab to serve."""
    dst.mkdir(parents=True, exist_ok=True)
    for nb in src.glob("*.ipynb"):
        shutil.copy2(nb, dst / nb.name)
    return dst


# --------------------------------------------------------------------------- JupyterLab, driven from the page

#: The notebook panel showing a notebook, found by path (not "whatever is focused").
PANEL_JS = """(name) => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === name && w.sessionContext) return w;
  }
  return null;
}"""

#: page.evaluate has no timeout of its own: every promise awaited in the page is raced against one.
WITH_TIMEOUT_JS = """(promise, ms, what) => Promise.race([promise, new Promise((_, reject) =>
  setTimeout(() => reject(new Error(what + ' timed out after ' + ms + ' ms')), ms))])"""

#: Run code in a notebook's kernel through JupyterLab's own connection (no cell is added);
#: ``page.evaluate(KERNEL_EXEC_JS, [name, code, ms])`` returns ``{stdout, errors}``.
KERNEL_EXEC_JS = """async ([name, code, ms]) => {
  const panel = (%s)(name);
  const future = panel.sessionContext.session.kernel.requestExecute({code, silent: false, store_history: false});
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

_RUN_ALL_JS = """async ([name, ms]) => {
  const panel = (%s)(name);
  const withTimeout = %s;
  await withTimeout(Promise.all([panel.context.ready, panel.sessionContext.ready]), ms, 'kernel start');
  // run-all acts on the current notebook: make sure it is this one
  for (let i = 0; i < 50 && window.jupyterapp.shell.currentWidget !== panel; i++) {
    window.jupyterapp.shell.activateById(panel.id);
    await new Promise(r => setTimeout(r, 100));
  }
  await withTimeout(window.jupyterapp.commands.execute('notebook:run-all-cells'), ms, 'run all cells');
}""" % (PANEL_JS, WITH_TIMEOUT_JS)


def run_all(page, name: str, timeout_ms: int) -> None:
    """Wait for notebook ``name``'s panel in the open JupyterLab page, its kernel, then Run All
    (returns when the cells are queued; wait for their outputs, or queue a kernel request behind them)."""
    page.wait_for_function(f"() => !!({PANEL_JS})({json.dumps(name)})", timeout=timeout_ms)
    page.evaluate(_RUN_ALL_JS, [name, timeout_ms])
