"""Strip a notebook to what the repository stores: no outputs, execution counts or widget state.

Git runs it as the clean filter of ``notebooks/*.ipynb`` (``.gitattributes``; ``make`` installs the
filter into ``.git/config``), so a notebook run and autosaved in JupyterLab stays unmodified for git:
``git status`` and ``git diff`` compare the stripped text, and ``git add`` stores it stripped. The
working copy keeps its outputs.

    python3 scripts/strip_notebook.py < in.ipynb > out.ipynb     # a filter (what git runs)
    python3 scripts/strip_notebook.py notebooks/*.ipynb          # strip files in place

Only the standard library: git runs it with the system's ``python3``, before any venv exists.
The output is written the way nbformat writes (one-space indent, sorted keys, a final newline),
so a stored notebook passes through unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

# Notebook metadata kept; JupyterLab's full language_info (version, lexer ...) is reduced to its name.
KEEP_METADATA = ("kernelspec", "language_info")
# Cell metadata that only records a session (timings, scroll and collapse state).
SESSION_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def strip(nb: dict) -> dict:
    """The notebook dict without outputs, execution counts, widget state or session metadata."""
    meta = {k: v for k, v in nb.get("metadata", {}).items() if k in KEEP_METADATA}
    if isinstance(meta.get("language_info"), dict):
        meta["language_info"] = {k: v for k, v in meta["language_info"].items() if k == "name"}
    cells = []
    for cell in nb.get("cells", []):
        cell = dict(cell)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        if isinstance(cell.get("metadata"), dict):
            cell["metadata"] = {k: v for k, v in cell["metadata"].items() if k not in SESSION_CELL_METADATA}
        cells.append(cell)
    return dict(nb, metadata=meta, cells=cells)


def dumps(nb: dict) -> str:
    """Text as nbformat writes it."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def strip_text(text: str) -> str:
    """Stripped notebook text; text that is not a notebook's JSON passes through unchanged (git
    must never lose a file because the filter could not read it)."""
    try:
        nb = json.loads(text)
    except ValueError:
        return text
    if not isinstance(nb, dict) or "cells" not in nb:
        return text
    return dumps(strip(nb))


def _strip_file(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = strip_text(text)
    if out == text:
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".strip-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(out)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str]) -> int:
    if not argv:
        # bytes in and out: the locale's encoding (ASCII under a bare POSIX locale) is not the file's
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            sys.stdout.buffer.write(data)
            return 0
        sys.stdout.buffer.write(strip_text(text).encode("utf-8"))
        return 0
    for path in argv:
        _strip_file(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
