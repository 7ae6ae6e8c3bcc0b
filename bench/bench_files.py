"""Memory and time that hostile or oversized files cost stnviz (issue 18, item 2).

Each probe runs in a fresh child process (``python bench/bench_files.py --probe NAME PATH``) that
first imports everything (torch, stnviz, Pillow, imageio), then resets its peak RSS
(``/proc/self/clear_refs`` = 5, Linux) and records its RSS; after the probe it reports its peak RSS
(``VmHWM``). **Peak RSS increase** = that peak minus the RSS before the probe: what the file cost,
not the imports. As a cross-check the child also reports its whole peak, imports included
(``VmHWM`` before the reset, or the probe's peak if higher: importing torch and stnviz peaks near
0.5 GB, so this column only moves when a probe goes above that); never ``ru_maxrss``, which Linux
carries over from the parent that spawned the child. ffmpeg decodes video in a process of its own,
which neither figure includes.

Probes (built in a temp folder first):

* ``deflate bomb``: a stn_tutorial checkpoint whose largest weight member is 3 GiB of zeros,
  deflated (a ~3 MB file); ``load_checkpoint``.
* ``num_classes=10**8``: a stn_tutorial checkpoint (113 KB) whose ``model_args`` ask for 10**8
  classes; ``load_pretrained``.
* ``TPS 10,000 points``: a stn_fcn_tps checkpoint whose regressor is sized for 10,000 control
  points and ``model_args`` ask for them; ``load_pretrained``, then one forward.
* ``1080p clip``: 2 s of 1920x1080 video at 30 fps (H.264, made with imageio/ffmpeg);
  ``read_frames(size=(64, 64))``.
* ``12000x12000 PNG``: a grey PNG (about 140 KB) in a folder; ``read_frames(size=(64, 64))``.
* ``shipped checkpoint`` (reference): ``load_pretrained("stn_gtsrb.gtsrb")``.

The figures before the fix are the issue's (fault probing on the same kind of machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from _common import reset_peak_rss, status_kb  # bench/ is on sys.path (run.py, or this file run as a child)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

#: The goal: no probe may cost more than this much peak RSS above what the process held before.
BOUND_MB = 200.0

# the figures before the fix: (seconds, GB)
BEFORE = {
    "deflate bomb": "78 s, 3.8 GB",
    "num_classes=10**8": "20 GB allocated",
    "TPS 10,000 points": "133 s, 3.8 GB (first forward)",
    "1080p clip": "+6.3 GB",
    "12000x12000 PNG": "+2.2 GB",
    "shipped checkpoint": "-",
}


# --------------------------------------------------------------------------- the files


def _largest_storage(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size).filename


def make_deflate_bomb(folder: Path, gib: float) -> Path:
    """A stn_tutorial checkpoint whose largest storage member is ``gib`` GiB of deflated zeros."""
    from stnviz.checkpoints import save_checkpoint
    from stnviz import get_model

    good = save_checkpoint(get_model("stn_tutorial", device="cpu"), folder / "good.pt")
    member = _largest_storage(good)
    bomb = folder / "bomb.pt"
    chunk = bytes(2**20)
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for info in zin.infolist():
            if info.filename != member:
                zout.writestr(info.filename, zin.read(info.filename), compress_type=zipfile.ZIP_STORED)
                continue
            target = zipfile.ZipInfo(info.filename)
            target.compress_type = zipfile.ZIP_DEFLATED
            with zout.open(target, "w", force_zip64=True) as out:
                for _ in range(int(gib * 1024)):
                    out.write(chunk)
    return bomb


def make_num_classes(folder: Path) -> Path:
    import torch

    from stnviz.checkpoints import save_checkpoint
    from stnviz import get_model

    path = save_checkpoint(get_model("stn_tutorial", device="cpu"), folder / "classes.pt")
    payload = torch.load(path, weights_only=True)
    payload["model_args"] = {"num_classes": 10**8}
    torch.save(payload, path)
    return path


def make_tps_10000(folder: Path) -> Path:
    """Weights sized for 10,000 control points (built by hand: stnviz no longer builds that model)."""
    import torch

    from stnviz.checkpoints import save_checkpoint, weights_digest
    from stnviz import get_model

    path = save_checkpoint(get_model("stn_fcn_tps", device="cpu"), folder / "tps.pt")
    payload = torch.load(path, weights_only=True)
    sd = payload["state_dict"]
    key = next(k for k in sd if k.endswith("regressor.weight"))
    features = sd[key].shape[1]
    side = torch.linspace(-1, 1, 100)
    gy, gx = torch.meshgrid(side, side, indexing="ij")
    sd[key] = torch.zeros(20_000, features)
    sd[key[: -len("weight")] + "bias"] = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).reshape(-1)
    payload["model_args"] = {"control_points": 10_000}
    payload["weights_sha256"] = weights_digest(sd)
    torch.save(payload, path)
    return path


def make_clip(folder: Path, seconds: float) -> Path:
    import imageio.v2 as imageio
    import numpy as np

    path = folder / "clip.mp4"
    frames = int(round(30 * seconds))
    ramp = np.linspace(0, 255, 1920, dtype=np.float32)
    base = np.stack([np.broadcast_to(ramp, (1080, 1920)), np.broadcast_to(ramp[::-1], (1080, 1920)),
                     np.full((1080, 1920), 96, np.float32)], -1).astype(np.uint8)
    with imageio.get_writer(str(path), format="FFMPEG", fps=30, codec="libx264", quality=5, macro_block_size=8) as w:
        for i in range(frames):
            w.append_data(np.roll(base, 8 * i, axis=1))
    return path


def make_png(folder: Path, side: int) -> Path:
    from PIL import Image

    images = folder / "png"
    images.mkdir()
    Image.new("L", (side, side)).save(images / "big.png")
    return images


# --------------------------------------------------------------------------- a probe (child process)


def _probe(name: str, arg: str) -> str:
    import torch

    import stnviz
    from stnviz.checkpoints import load_checkpoint
    from stnviz.data import read_frames

    if name == "deflate bomb":
        load_checkpoint(arg)
        return "loaded"
    if name in ("num_classes=10**8", "shipped checkpoint"):
        stnviz.load_pretrained(arg, device="cpu")
        return "loaded"
    if name == "TPS 10,000 points":
        model = stnviz.load_pretrained(arg, device="cpu")
        model(torch.rand(1, *model.input_size))
        return "loaded and ran"
    frames, _ = read_frames(arg, size=(64, 64))
    return f"read {tuple(frames.shape)}"


def child(name: str, arg: str) -> None:
    import imageio.v2  # noqa: F401 - import everything first: the figures are the probe's, not the imports'
    import PIL.Image  # noqa: F401
    import torch  # noqa: F401

    import stnviz  # noqa: F401
    from stnviz.checkpoints import load_checkpoint  # noqa: F401
    from stnviz.data import read_frames  # noqa: F401

    imports_peak = status_kb("VmHWM")  # the child's own peak so far (the imports)
    reset = reset_peak_rss()
    before = status_kb("VmRSS")
    t0 = time.perf_counter()
    try:
        outcome, refused = _probe(name, arg), False
    except Exception as e:  # noqa: BLE001 - the refusal is the expected outcome of most probes
        outcome, refused = f"{type(e).__name__}: {' '.join(str(e).split())}", True
    seconds = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    print(json.dumps({"before_kb": before, "peak_kb": peak, "child_peak_kb": max(imports_peak, peak),
                      "peak_reset": reset, "seconds": seconds,
                      "refused": refused, "outcome": outcome}))


# --------------------------------------------------------------------------- the parent


def run_probe(name: str, arg: str, timeout: float = 600.0) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--probe", name, arg],
                                stdout=out, stderr=subprocess.DEVNULL, env=env, cwd=REPO_ROOT, text=True)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                return {"probe": name, "outcome": f"timed out after {timeout:.0f} s", "refused": False}
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = out.read().strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"probe": name, "outcome": f"child exited {proc.returncode}", "refused": False}
    r = json.loads(lines[-1])
    return {"probe": name, **r}


def run(quick: bool) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    bomb_gib = 0.25 if quick else 3.0
    rows, goals, warnings = [], [], []
    with tempfile.TemporaryDirectory(prefix="stnviz-bench-files-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        probes = [
            ("deflate bomb", make_deflate_bomb(folder, bomb_gib)),
            ("num_classes=10**8", make_num_classes(folder)),
            ("TPS 10,000 points", make_tps_10000(folder)),
            ("1080p clip", make_clip(folder, 1.0 if quick else 2.0)),
            ("12000x12000 PNG", make_png(folder, 12000)),
            ("shipped checkpoint", "stn_gtsrb.gtsrb"),
        ]
        made = time.perf_counter() - t0
        for name, arg in probes:
            size = Path(arg).stat().st_size if Path(arg).is_file() else (
                sum(p.stat().st_size for p in Path(arg).iterdir()) if Path(arg).is_dir() else None)
            r = run_probe(name, str(arg))
            increase = (r["peak_kb"] - r["before_kb"]) / 1024 if "peak_kb" in r else None
            if r.get("peak_reset") is False:
                warnings.append(f"{name}: /proc/self/clear_refs not writable; the peak includes the imports")
            rows.append({
                "probe": name,
                "file KB": round(size / 1024, 1) if size is not None else None,
                "outcome": ("refused: " if r.get("refused") else "") + r["outcome"][:160],
                "RSS before MB": round(r["before_kb"] / 1024, 1) if "before_kb" in r else None,
                "peak RSS increase MB": round(increase, 1) if increase is not None else None,
                "child peak MB (imports included)": round(r["child_peak_kb"] / 1024, 1) if "child_peak_kb" in r else None,
                "seconds": round(r["seconds"], 2) if "seconds" in r else None,
                "before the fix (issue)": BEFORE[name],
            })
            expect_refused = name not in ("1080p clip", "shipped checkpoint")
            ok = increase is not None and increase <= BOUND_MB and bool(r.get("refused")) == expect_refused
            goals.append({
                "goal": f"{name}: {'refused' if expect_refused else 'read'} with peak RSS increase <= {BOUND_MB:.0f} MB",
                "value": increase if increase is not None else float("nan"),
                "target": f"<= {BOUND_MB:.0f} MB, {'refused' if expect_refused else 'not refused'}",
                "met": ok,
            })
    notes = (__doc__.split("\n\n", 1)[1] + f"\nBuilding the probe files took {made:.1f} s."
             + (f" QUICK: the bomb is {bomb_gib} GiB and the clip 1 s." if quick else ""))
    return {"name": "files", "table": rows, "notes": notes, "goals": goals, "warnings": warnings}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        child(sys.argv[2], sys.argv[3])
    else:
        print("usage: python bench/run.py --out DIR --only files  (this file runs probes as a child)", file=sys.stderr)
        sys.exit(2)
