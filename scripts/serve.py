"""Start a Jupyter server for ``make lab`` / ``make dashboard``: a token that never touches a command
line, and the URL of the port the server really listens on.

    STNVIZ_TOKEN=... python3 scripts/serve.py --port 8888 --path /lab -- .venv/bin/jupyter lab ...

- The token comes from ``STNVIZ_TOKEN`` in the environment and reaches the server as
  ``JUPYTER_TOKEN`` (which jupyter_server's identity provider reads, and Voila with
  ``--Voila.auto_token=True``): it is never pasted into a shell line (a space, a ``$`` or a quote in
  it stays what it is) nor put on the server's command line, where any local user can read it in
  ``/proc/PID/cmdline`` (a process's environment is readable by its owner only). An empty token is
  refused: it would switch authentication off.
- If ``--port`` is taken, the next free port is used and said so; the server gets ``--port=N`` and
  no retries of its own (``--ServerApp.port_retries=0`` / ``--Voila.port_retries=0`` in the
  Makefile), so the printed URL is the one it listens on, or it fails saying the port is taken.

Only the standard library (it runs before any venv exists).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.parse

HOST = "127.0.0.1"
TRIES = 20  # ports tried after a taken one


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could bind ``host:port`` now (a probe bind, released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(wanted: int, tries: int = TRIES) -> int:
    """``wanted`` when free, else the first free port after it; ``OSError`` when none of them is."""
    for port in range(wanted, min(wanted + tries + 1, 65536)):
        if port_is_free(port):
            return port
    raise OSError(f"ports {wanted}-{min(wanted + tries, 65535)} on {HOST} are all taken; choose another with PORT=...")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"PORT must be a whole number in 1-65535, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"PORT must be a whole number in 1-65535, got {port}")
    return port


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serve.py", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=_port, required=True)
    parser.add_argument("--path", default="/", help="URL path printed for the user, e.g. /lab")
    parser.add_argument("--name", default="Jupyter", help="what is served, for the printed line")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the server's command line, without --port")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no server command given after --")
    token = os.environ.get("STNVIZ_TOKEN", "")
    if not token.strip():
        print("make: STNVIZ_TOKEN is empty; an empty token would let anyone on this machine use the server. "
              "Unset it for a random token or set a non-empty one.", file=sys.stderr)
        return 2
    try:
        port = choose_port(args.port)
    except OSError as e:
        print(f"make: {e}", file=sys.stderr)
        return 2
    if port != args.port:
        print(f"port {args.port} on {HOST} is taken (another server?); serving on port {port} instead")
    url = f"http://{HOST}:{port}{args.path}?token={urllib.parse.quote(token, safe='')}"
    print(f"{args.name} on {url}", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "STNVIZ_TOKEN"}
    env["JUPYTER_TOKEN"] = token
    try:
        os.execvpe(command[0], [*command, f"--port={port}"], env)
    except OSError as e:
        print(f"make: cannot start {command[0]}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
