"""``make lab`` / ``make dashboard`` (scripts/serve.py): the token travels in the environment only,
arrives intact whatever it holds, is refused when empty; the printed URL is the port really served."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_venv(tmp_path):
    """A venv folder whose jupyter / voila only print their arguments, and an install stamp newer
    than pyproject.toml, so `make lab` runs its recipe without installing or serving anything."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for tool in ("jupyter", "voila"):
        script = venv / "bin" / tool
        script.write_text('#!/bin/sh\necho "SERVED $*"\nprintf "JUPYTER_TOKEN=%s\\n" "$JUPYTER_TOKEN"\n')
        script.chmod(0o755)
    later = os.stat(REPO / "pyproject.toml").st_mtime + 10
    for extra in ("lab", "dashboard"):
        stamp = venv / f".stnviz-{extra}"
        stamp.touch()
        os.utime(stamp, (later, later))
    return venv


def run_make(target, venv, *assignments, env=None):
    environ = {k: v for k, v in os.environ.items() if "TOKEN" not in k}
    environ.update(env or {})
    return subprocess.run(["make", "-s", "-C", str(REPO), target, f"VENV={venv}", "PYTHON=python3", *assignments],
                          capture_output=True, text=True, timeout=60, env=environ)


class TestMakeToken:
    @pytest.mark.parametrize("target", ["lab", "dashboard"])
    def test_empty_token_is_refused(self, fake_venv, target):
        proc = run_make(target, fake_venv, "STNVIZ_TOKEN=")
        assert proc.returncode != 0
        assert "SERVED" not in proc.stdout and "STNVIZ_TOKEN is empty" in proc.stderr

    @pytest.mark.parametrize("target", ["lab", "dashboard"])
    def test_empty_token_from_the_environment_is_refused(self, fake_venv, target):
        proc = run_make(target, fake_venv, env={"STNVIZ_TOKEN": ""})
        assert proc.returncode != 0 and "SERVED" not in proc.stdout

    def test_generic_token_variable_is_never_read(self, fake_venv):
        proc = run_make("lab", fake_venv, env={"TOKEN": "ci-secret-123"})
        assert proc.returncode == 0, proc.stderr
        assert "ci-secret-123" not in proc.stdout + proc.stderr
        assert len(_served_token(proc)) == 32  # a fresh random token instead

    def test_empty_generic_token_does_not_switch_authentication_off(self, fake_venv):
        proc = run_make("lab", fake_venv, "TOKEN=")
        assert proc.returncode == 0, proc.stderr
        assert len(_served_token(proc)) == 32

    def test_chosen_token_is_used(self, fake_venv):
        proc = run_make("dashboard", fake_venv, env={"STNVIZ_TOKEN": "my-token"})
        assert proc.returncode == 0, proc.stderr
        assert _served_token(proc) == "my-token" and "--Voila.auto_token=True" in _served(proc)

    @pytest.mark.parametrize("target", ["lab", "dashboard"])
    def test_token_is_never_on_a_command_line(self, fake_venv, target):
        """Another local user can read any process's command line in /proc; the environment, not."""
        proc = run_make(target, fake_venv, env={"STNVIZ_TOKEN": "secret-abc-123"})
        assert proc.returncode == 0, proc.stderr
        assert _served_token(proc) == "secret-abc-123"
        assert "secret-abc-123" not in _served(proc)
        assert "token" not in _served(proc).lower().replace("auto_token", "")
        run = subprocess.run(["make", "-n", "-s", "-C", str(REPO), target, f"VENV={fake_venv}"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "STNVIZ_TOKEN": "secret-abc-123"})
        assert "secret-abc-123" not in run.stdout  # not in any shell line make runs either

    @pytest.mark.parametrize("token", ['two words', 'dollar$HOME$$x', 'quote"\'; touch INJECTED; echo "', '`touch INJECTED`'])
    def test_any_token_arrives_intact(self, fake_venv, token, tmp_path):
        for how in ("environment", "command line"):
            if how == "environment":
                proc = run_make("lab", fake_venv, env={"STNVIZ_TOKEN": token})
            else:
                proc = run_make("lab", fake_venv, f"STNVIZ_TOKEN={token}")
            assert proc.returncode == 0, (how, proc.stderr)
            assert _served_token(proc) == token, how
            url = [ln for ln in proc.stdout.splitlines() if ln.startswith("JupyterLab on ")][0]
            assert urllib.parse.parse_qs(urllib.parse.urlsplit(url.split(" on ", 1)[1]).query)["token"] == [token]
        assert not (REPO / "INJECTED").exists()

    def test_taken_port_prints_the_port_really_served(self, fake_venv):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            proc = run_make("lab", fake_venv, f"PORT={taken}")
        assert proc.returncode == 0, proc.stderr
        served_port = int(_served(proc).split("--port=")[1].split()[0])
        assert served_port != taken and f"port {taken} on 127.0.0.1 is taken" in proc.stdout
        url = [ln for ln in proc.stdout.splitlines() if ln.startswith("JupyterLab on ")][0]
        assert urllib.parse.urlsplit(url.split(" on ", 1)[1]).port == served_port
        assert "--ServerApp.port_retries=0" in _served(proc)  # Jupyter itself never moves on

    @pytest.mark.parametrize("port", ["abc", "0", "70000"])
    def test_bad_port_is_refused(self, fake_venv, port):
        proc = run_make("lab", fake_venv, f"PORT={port}")
        assert proc.returncode != 0 and "SERVED" not in proc.stdout
        assert "PORT must be a whole number in 1-65535" in proc.stderr and port in proc.stderr


def _served(proc) -> str:
    """The fake server's command line."""
    return [ln for ln in proc.stdout.splitlines() if ln.startswith("SERVED")][0]


def _served_token(proc) -> str:
    """The token the fake server found in its environment."""
    return [ln for ln in proc.stdout.splitlines() if ln.startswith("JUPYTER_TOKEN=")][0].split("=", 1)[1]
