"""Benchmark runner for stnviz.

Usage::

    python bench/run.py --out DIR [--only NAME] [--quick] [--strict] [--wait-idle SECONDS]

Discovers every ``bench/bench_*.py`` module. Each exposes ``run(quick: bool) -> dict`` returning::

    {"name": str, "table": [row dict, ...], "notes": str,
     "goals": [{"goal": str, "value": float, "target": str, "met": bool}, ...],
     "warnings": [str, ...]}   # optional, e.g. "measurement disturbed by other load"

For each module this writes ``DIR/<name>.json`` (the result plus machine facts) and
``DIR/<name>.md`` (markdown table, goals, notes, machine facts), each via a temp file and
``os.replace`` so a reader never sees a half-written file, and prints the markdown.

Exit code: 0 even when a goal is missed (a ``GOAL MISSED`` line is printed for each);
with ``--strict`` a missed goal exits 1. A benchmark that crashes (or a bad ``--only``) exits 2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


# --------------------------------------------------------------------------- machine facts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _cpu_pressure() -> str:
    """Linux PSI line for CPU ("some avg10=.. avg60=.."): how much tasks waited for a CPU."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            for line in f:
                if line.startswith("some "):
                    return " ".join(p for p in line.split()[1:] if not p.startswith("total="))
    except OSError:
        pass
    return "unavailable"


def _cpu_pressure_avg10() -> float | None:
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            for line in f:
                if line.startswith("some "):
                    return float(line.split("avg10=", 1)[1].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


def wait_idle(max_seconds: float, threshold: float = 5.0, settle: int = 2, poll: float = 10.0) -> str:
    """Wait (up to ``max_seconds``) until CPU pressure (PSI some avg10, %) stays below
    ``threshold`` for ``settle`` polls in a row. Returns a one-line description of what happened."""
    if max_seconds <= 0:
        return "not requested"
    if _cpu_pressure_avg10() is None:
        return "PSI unavailable; did not wait"
    start = time.monotonic()
    calm = 0
    while True:
        v = _cpu_pressure_avg10()
        calm = calm + 1 if v is not None and v < threshold else 0
        waited = time.monotonic() - start
        if calm >= settle:
            return f"idle after {waited:.0f} s (PSI some avg10 {v:.1f}% < {threshold}%)"
        if waited >= max_seconds:
            return f"gave up after {waited:.0f} s; PSI some avg10 still {v}%"
        time.sleep(poll)


def machine_facts() -> dict:
    import torch

    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": _loadavg(),
        "cpu_pressure_at_start": _cpu_pressure(),
    }


# --------------------------------------------------------------------------- discovery


def discover() -> dict[str, Path]:
    """``{short name: path}`` for every ``bench_*.py`` next to this file, sorted."""
    return {p.stem[len("bench_"):]: p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise TypeError(f"{path.name} has no run(quick) function")
    return module


def check_result(result, path: Path) -> dict:
    if not isinstance(result, dict):
        raise TypeError(f"{path.name}: run() must return a dict, got {type(result).__name__}")
    result.setdefault("warnings", [])
    for key in ("name", "table", "notes", "goals"):
        if key not in result:
            raise TypeError(f"{path.name}: run() result is missing {key!r}")
    for g in result["goals"]:
        missing = {"goal", "value", "target", "met"} - set(g)
        if missing:
            raise TypeError(f"{path.name}: goal {g!r} is missing {sorted(missing)}")
    return result


# --------------------------------------------------------------------------- rendering


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "_(no rows)_\n"
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def goal_line(g: dict) -> str:
    status = "GOAL MET" if g["met"] else "GOAL MISSED"
    return f"{status}: {g['goal']} -- value {_fmt(float(g['value']))}, target {g['target']}"


def render_markdown(result: dict, machine: dict, quick: bool, elapsed: float) -> str:
    lines = [f"# Benchmark: {result['name']}" + (" (QUICK MODE)" if quick else ""), ""]
    lines.append(markdown_table(result["table"]))
    lines.append("## Goals")
    lines.append("")
    if result["goals"]:
        lines.extend(f"- {goal_line(g)}" for g in result["goals"])
    else:
        lines.append("- (none)")
    lines.append("")
    if result["warnings"]:
        lines.append("## Warnings")
        lines.append("")
        lines.extend(f"- WARNING: {w}" for w in result["warnings"])
        lines.append("")
    if result["notes"]:
        lines.append("## Notes")
        lines.append("")
        lines.append(result["notes"].strip())
        lines.append("")
    lines.append("## Machine")
    lines.append("")
    for k, v in machine.items():
        lines.append(f"- {k}: {v}")
    lines.append(f"- mode: {'quick' if quick else 'full'}")
    lines.append(f"- benchmark wall time: {elapsed:.1f} s")
    lines.append("")
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read and committed
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run stnviz benchmarks (bench/bench_*.py).")
    parser.add_argument("--out", required=True, help="directory for NAME.json and NAME.md")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (e.g. 'geometry' or 'bench_geometry'); repeatable")
    parser.add_argument("--quick", action="store_true", help="smaller, faster run (results labelled quick)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any goal is missed")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each benchmark, wait up to SECONDS for the machine to be idle "
                             "(Linux PSI CPU pressure avg10 < 5%%); then run anyway")
    args = parser.parse_args(argv)

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if str(BENCH_DIR) not in sys.path:  # bench/_common.py
        sys.path.insert(0, str(BENCH_DIR))

    found = discover()
    if args.only:
        wanted = [n[len("bench_"):] if n.startswith("bench_") else n for n in args.only]
        wanted = [n[: -len(".py")] if n.endswith(".py") else n for n in wanted]
        unknown = [n for n in wanted if n not in found]
        if unknown:
            print(f"error: unknown benchmark(s) {unknown}; available: {sorted(found)}", file=sys.stderr)
            return 2
        found = {n: found[n] for n in wanted}
    if not found:
        print(f"error: no bench_*.py modules in {BENCH_DIR}", file=sys.stderr)
        return 2

    out_dir = Path(args.out)
    missed: list[str] = []
    warned: list[str] = []
    errors: list[str] = []
    for short, path in found.items():
        idle = wait_idle(args.wait_idle)
        if args.wait_idle > 0:
            print(f"[{short}] wait for idle machine: {idle}", file=sys.stderr)
        machine = machine_facts()
        machine["wait_idle"] = idle
        t0 = time.perf_counter()
        try:
            result = check_result(load_module(path).run(quick=args.quick), path)
        except Exception:
            traceback.print_exc()
            errors.append(short)
            print(f"BENCHMARK ERROR: {path.name} failed; no results written for it", file=sys.stderr)
            continue
        elapsed = time.perf_counter() - t0
        machine["loadavg_at_end"] = _loadavg()
        machine["cpu_pressure_at_end"] = _cpu_pressure()
        name = str(result["name"])
        md = render_markdown(result, machine, args.quick, elapsed)
        payload = {**result, "quick": args.quick, "elapsed_s": round(elapsed, 2), "machine": machine}
        write_atomic(out_dir / f"{name}.json", json.dumps(payload, indent=2, default=str) + "\n")
        write_atomic(out_dir / f"{name}.md", md)
        print(md)
        for w in result["warnings"]:
            warned.append(f"WARNING: {w} [{name}]")
        for g in result["goals"]:
            if not g["met"]:
                missed.append(f"{goal_line(g)} [{name}]")
        print(f"wrote {out_dir / (name + '.json')} and {out_dir / (name + '.md')}")
        print()

    if missed or warned:
        print("=" * 72)
        for line in warned + missed:
            print(line)
        print("=" * 72)
    if errors:
        return 2
    if missed and args.strict:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
