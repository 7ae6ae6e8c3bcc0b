"""Capture: memory over many forwards of foreign STN code, overhead on a training step and on a
forward, the cost per sampling, and a flow model's records in bytes.

1. **Memory**: a foreign (non-stnviz) tutorial-style STN captured over 1,000 forwards with
   ``keep_last=4`` inside one context. Goal: the process's resident memory grows by the four kept
   records (input, grid, output of a batch of 64: about 3 MB) and at most 4 MB more (allocator
   slack): no grid or theta is kept beyond the records.
2. **Overhead on a training step**: ``stn_tutorial`` training steps (forward, backward, SGD step)
   at batch 64, with and without ``capture(model, keep_last=4, batch_slice=8)`` around each step.
   Steps run in pairs (one of each, in random order) so background load hits both alike; the
   overhead is the median of the per-pair time ratios. Goal: <= 5%. Measured twice: wall time
   with torch's threads (what a user waits; disturbed by any other load on the machine) and the
   CPU time of one thread with ``torch.set_num_threads(1)`` (what capture adds to the work).
   Where it goes: the ``TorchFunctionMode`` is on the stack only while a module of the model runs
   (the loss, backward and the optimizer's ``.grad`` reads no longer go through Python), so the
   forward's torch calls pay a few microseconds each; plus the hooks on each module call, the time
   to open and close the capture and the copies of the 8 kept samples. stnviz's grid generators
   build their affine grid by broadcasting inside a capture as outside it (``geometry.theta_recorded``:
   their hook records theta), not with ``F.affine_grid``: 7.0% -> 5.0% of the step's CPU time.
3. **Overhead on a forward** (issue 20): a forward of 300 torch calls of which 4 are sampler
   calls (``grid_sample`` of 4 transformer stages on a batch of 16 feature maps 8 x 28 x 28),
   CPU time on one thread, interleaved triples: no mode, a no-op ``TorchFunctionMode`` (the
   floor any interception by a mode pays: every torch call through Python), and ``capture`` with
   default settings. Goal: capture <= 1.3x the plain forward.
4. **Cost per sampling** (issue 20): one forward making N ``affine_grid`` + ``grid_sample``
   calls on 1 x 8 x 8 images, the N grids kept alive until the forward ends (the case that made
   the grid bookkeeping rescan its list on every call: quadratic). The capture's extra CPU time
   per sampling at N = 100 and N = 3,000 (``keep_last=None``, ``max_bytes=None``: every record
   kept). Goal: the cost per sampling at 3,000 is at most 1.5x that at 100 (amortised O(1)).
5. **A flow model in bytes** (issue 20): a RAFT-style model written here (no download): features
   at 1/8 of a 368 x 496 frame pair (46 x 62 pixels), the all-pairs correlation volume
   ``(2852, 1, 46, 62)`` and its 4-level pyramid, 12 iterations of a 9 x 9 look-up per level
   (48 ``grid_sample`` calls with a batch of pixels x images) and a flow update. Captured with the
   default settings (``keep_last=64``, ``max_bytes=256 MB``). Records that sample the same
   pyramid level share one copy. Goal: the kept bytes stay under the default budget with all
   48 records kept; for comparison, what the records would hold with a copy per record.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import stnviz
from stnviz.capture import capture

NAME = "capture"


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class ForeignSTN(nn.Module):
    """The PyTorch tutorial's pattern, written without stnviz (names bound the usual way)."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Sequential(nn.Conv2d(1, 8, 7), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(8, 10, 5), nn.MaxPool2d(2),
                                 nn.ReLU(), nn.Flatten(), nn.Linear(90, 32), nn.ReLU(), nn.Linear(32, 6))
        nn.init.zeros_(self.loc[-1].weight)
        with torch.no_grad():
            self.loc[-1].bias.copy_(torch.tensor([0.9, 0.1, 0.0, -0.1, 0.9, 0.0]))
        self.head = nn.Linear(28 * 28, 10)

    def forward(self, x):
        theta = self.loc(x).view(-1, 2, 3)
        x = F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)
        return self.head(x.flatten(1))


def _memory(forwards: int) -> dict:
    torch.manual_seed(0)
    model = ForeignSTN().eval()
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        for _ in range(20):  # warm the allocator
            model(x)
    gc.collect()
    start = _rss_mb()
    peak = start
    with torch.no_grad(), capture(model, keep_last=4) as rec:
        for i in range(forwards):
            model(x)
            if i % 50 == 0:
                peak = max(peak, _rss_mb())
    end_inside = _rss_mb()
    peak = max(peak, end_inside)
    kept = len(rec)
    record_mb = sum(t.numel() * t.element_size() for r in rec for t in (r.input, r.grid, r.output, r.params)
                    if t is not None) / 2**20
    del rec
    gc.collect()
    return {"forwards": forwards, "records_kept": kept, "rss_start_mb": round(start, 1),
            "rss_end_inside_mb": round(end_inside, 1), "rss_peak_mb": round(peak, 1),
            "growth_mb": round(end_inside - start, 1), "records_mb": round(record_mb, 1),
            "beyond_records_mb": round(end_inside - start - record_mb, 1)}


def _overhead(pairs: int, clock=time.perf_counter) -> dict:
    torch.manual_seed(0)
    model = stnviz.get_model("stn_tutorial", device="cpu").train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def timed(with_capture: bool) -> float:
        t0 = clock()
        if with_capture:
            with capture(model, keep_last=4, batch_slice=8):
                step()
        else:
            step()
        return clock() - t0

    for _ in range(10):
        timed(True)
        timed(False)
    plain, captured, ratios = [], [], []
    order = random.Random(0)
    for _ in range(pairs):
        first = order.random() < 0.5  # which of the pair runs first, at random: no order bias
        a = timed(first)
        b = timed(not first)
        c, p = (a, b) if first else (b, a)
        captured.append(c)
        plain.append(p)
        ratios.append(c / p)
    p, c = statistics.median(plain), statistics.median(captured)
    return {"pairs": pairs, "plain_ms": round(p * 1e3, 2), "captured_ms": round(c * 1e3, 2),
            "overhead_pct": round((statistics.median(ratios) - 1) * 100, 1)}



class FourStages(nn.Module):
    """A forward of 297 torch calls, 4 of them ``grid_sample``: four transformer stages, each a
    localisation head (17 residual convolutions, a pooled linear layer), ``affine_grid`` and a warp."""

    def __init__(self, channels: int = 8, depth: int = 17):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth))
                                    for _ in range(4))
        self.heads = nn.ModuleList(nn.Linear(channels, 6) for _ in range(4))
        for h in self.heads:
            nn.init.zeros_(h.weight)
            with torch.no_grad():
                h.bias.copy_(torch.tensor([0.9, 0.0, 0.0, 0.0, 0.9, 0.0]))

    def forward(self, x):
        x = self.stem(x)
        for convs, head in zip(self.blocks, self.heads):
            y = x
            for conv in convs:
                y = torch.relu(conv(y)) + y * 0.5
            theta = head(y.mean((2, 3))).view(-1, 2, 3)
            x = F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)
        return x


class _NoOp(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class _Count(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = self.samplers = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        self.samplers += func is F.grid_sample
        return func(*args, **(kwargs or {}))


def _forward_overhead(rounds: int) -> dict:
    torch.manual_seed(0)
    model = FourStages().eval()
    x = torch.rand(16, 3, 28, 28)
    with torch.no_grad(), _Count() as count:
        model(x)

    def plain():
        model(x)

    def noop():
        with _NoOp():
            model(x)

    def captured():
        with capture(model):
            model(x)

    variants = {"plain": plain, "no-op mode": noop, "capture": captured}
    times = {k: [] for k in variants}
    order = random.Random(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for f in variants.values():
                for _ in range(5):
                    f()
            for _ in range(rounds):
                names = list(variants)
                order.shuffle(names)
                for k in names:
                    t0 = time.thread_time()
                    variants[k]()
                    times[k].append(time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"torch_calls": count.calls, "sampler_calls": count.samplers, "rounds": rounds,
            "ms": {k: round(v * 1e3, 2) for k, v in med.items()},
            "ratio": {k: round(med[k] / med["plain"], 3) for k in med}}


class ManySamplings(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        grids, outs = [], []
        for i in range(self.n):
            theta = torch.tensor([[[1.0, 0.0, i / self.n], [0.0, 1.0, 0.0]]])
            grids.append(F.affine_grid(theta, x.size(), align_corners=False))  # all alive until the end
            outs.append(F.grid_sample(x, grids[-1], align_corners=False))
        return outs


def _per_sampling(n: int, repeats: int) -> float:
    """The capture's extra CPU time per sampling, microseconds (median of ``repeats``)."""
    model = ManySamplings(n)
    x = torch.rand(1, 1, 8, 8)
    extra = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.thread_time()
            model(x)
            t1 = time.thread_time()
            with capture(model, keep_last=None, max_bytes=None):
                model(x)
            t2 = time.thread_time()
            extra.append(((t2 - t1) - (t1 - t0)) / n)
    return statistics.median(extra) * 1e6


class RaftLike(nn.Module):
    """RAFT's correlation look-up loop at 1/8 resolution: all-pairs correlation, a 4-level pyramid,
    ``iters`` iterations of a ``(2r+1)^2`` window look-up per level and a flow update."""

    def __init__(self, levels: int = 4, radius: int = 4, iters: int = 12, dim: int = 32):
        super().__init__()
        self.levels, self.radius, self.iters = levels, radius, iters
        self.fnet = nn.Sequential(nn.Conv2d(3, dim, 7, stride=4, padding=3), nn.ReLU(),
                                  nn.Conv2d(dim, dim, 3, stride=2, padding=1))
        self.update = nn.Conv2d(levels * (2 * radius + 1) ** 2 + 2, 2, 3, padding=1)

    def lookup(self, pyramid, coords):
        b, _, h, w = coords.shape
        r = self.radius
        d = torch.arange(-r, r + 1, dtype=coords.dtype, device=coords.device)
        delta = torch.stack(torch.meshgrid(d, d, indexing="ij")[::-1], -1)  # (2r+1, 2r+1, 2) as (x, y)
        centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for level, corr in enumerate(pyramid):
            _, _, hl, wl = corr.shape
            window = centre / 2**level + delta
            grid = torch.stack([2 * window[..., 0] / (wl - 1) - 1, 2 * window[..., 1] / (hl - 1) - 1], -1)
            out.append(F.grid_sample(corr, grid, align_corners=True).view(b, h, w, -1))
        return torch.cat(out, -1).permute(0, 3, 1, 2)

    def forward(self, frame1, frame2):
        f1, f2 = self.fnet(frame1), self.fnet(frame2)
        b, c, h, w = f1.shape
        corr = torch.einsum("bchw,bcuv->bhwuv", f1, f2).reshape(b * h * w, 1, h, w) / c**0.5
        pyramid = [corr]
        for _ in range(self.levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
        ys, xs = torch.meshgrid(torch.arange(h, dtype=f1.dtype), torch.arange(w, dtype=f1.dtype), indexing="ij")
        coords0 = torch.stack([xs, ys]).expand(b, 2, h, w)
        coords = coords0.clone()
        for _ in range(self.iters):
            coords = coords + self.update(torch.cat([self.lookup(pyramid, coords), coords - coords0], 1))
        return coords - coords0


def _flow_bytes() -> dict:
    torch.manual_seed(0)
    model = RaftLike().eval()
    frames = torch.rand(2, 1, 3, 368, 496)
    with torch.no_grad(), capture(model) as rec:
        model(frames[0], frames[1])
    per_record = sum(t.untyped_storage().nbytes() for r in rec for t in (r.input, r.grid, r.output, r.params)
                     if t is not None)
    return {"records": len(rec), "dropped": rec.dropped, "kept_mb": round(rec.kept_bytes / 2**20, 1),
            "copy_per_record_mb": round(per_record / 2**20, 1), "budget_mb": rec.max_bytes / 2**20,
            "lookup_batch": rec[0].input.shape[0]}


def run(quick: bool = False) -> dict:
    mem = _memory(200 if quick else 1000)
    ov = _overhead(30 if quick else 200)
    # the same on one thread, timed by the CPU time of that thread: what capture adds to the work,
    # not disturbed by other processes competing for the cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu = _overhead(30 if quick else 200, clock=time.thread_time)
    finally:
        torch.set_num_threads(threads)
    table = [
        {"measure": f"RSS growth over {mem['forwards']} captured forwards (keep_last=4, batch 64)",
         "value": f"{mem['growth_mb']} MB", "detail": f"start {mem['rss_start_mb']} MB, peak {mem['rss_peak_mb']} MB, "
                                                     f"{mem['records_kept']} records kept holding {mem['records_mb']} MB"},
        {"measure": "stn_tutorial training step, batch 64, no capture (median)", "value": f"{ov['plain_ms']} ms",
         "detail": f"{ov['pairs']} interleaved pairs"},
        {"measure": "same step inside capture(keep_last=4, batch_slice=8) (median)", "value": f"{ov['captured_ms']} ms",
         "detail": f"overhead {ov['overhead_pct']}%"},
        {"measure": "one thread, CPU time of the step: no capture / inside capture (medians)",
         "value": f"{cpu['plain_ms']} / {cpu['captured_ms']} ms", "detail": f"overhead {cpu['overhead_pct']}%"},
    ]
    goals = [
        {"goal": "memory growth beyond the 4 kept records over 1,000 foreign forwards (keep_last=4)",
         "value": mem["beyond_records_mb"], "target": "<= 4 MB", "met": mem["beyond_records_mb"] <= 4.0},
        {"goal": "capture overhead on an stn_tutorial training step (batch 64, batch_slice=8), wall time",
         "value": ov["overhead_pct"], "target": "<= 5%", "met": ov["overhead_pct"] <= 5.0},
        {"goal": "the same, CPU time on one thread", "value": cpu["overhead_pct"], "target": "<= 5%",
         "met": cpu["overhead_pct"] <= 5.0},
    ]
    fwd = _forward_overhead(20 if quick else 100)
    per = {n: _per_sampling(n, 3 if quick else 7) for n in (100, 3000)}
    flow = _flow_bytes()
    table += [
        {"measure": f"forward of {fwd['torch_calls']} torch calls ({fwd['sampler_calls']} grid_sample), one thread, "
                    "plain / no-op mode / capture (medians)",
         "value": " / ".join(f"{fwd['ms'][k]} ms" for k in ("plain", "no-op mode", "capture")),
         "detail": f"x{fwd['ratio']['no-op mode']} / x{fwd['ratio']['capture']} of plain, {fwd['rounds']} rounds"},
        {"measure": "capture's CPU time per sampling, 100 / 3,000 samplings in one forward (grids alive)",
         "value": f"{per[100]:.0f} / {per[3000]:.0f} us", "detail": f"ratio {per[3000] / per[100]:.2f}"},
        {"measure": f"RAFT-style 368x496, 12 iterations: {flow['records']} records kept with default settings",
         "value": f"{flow['kept_mb']} MB",
         "detail": f"look-up batch {flow['lookup_batch']} (pixels x images), dropped {flow['dropped']}, "
                   f"{flow['copy_per_record_mb']} MB with a copy per record"},
    ]
    goals += [
        {"goal": "capture's CPU time on a 300-call forward with 4 sampler calls, x of the plain forward",
         "value": fwd["ratio"]["capture"], "target": "<= 1.3x", "met": fwd["ratio"]["capture"] <= 1.3},
        {"goal": "capture's cost per sampling at 3,000 samplings in one forward, x of that at 100",
         "value": round(per[3000] / per[100], 2), "target": "<= 1.5x", "met": per[3000] / per[100] <= 1.5},
        {"goal": "bytes kept after one captured forward of a 368x496 RAFT-style model, 12 iterations, defaults",
         "value": flow["kept_mb"], "target": f"<= {flow['budget_mb']:.0f} MB with all 48 records kept",
         "met": flow["kept_mb"] <= flow["budget_mb"] and flow["records"] == 48 and flow["dropped"] == 0},
    ]
    notes = __doc__.strip()
    return {"name": NAME, "table": table, "goals": goals, "notes": notes}


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=False), indent=2))
