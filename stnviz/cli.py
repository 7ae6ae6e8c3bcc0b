"""Command line: ``python -m stnviz demo|models``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import run_demo

    for path in run_demo(args.out, device=args.device):
        print(f"wrote {path}")
    return 0


def _models(args) -> int:
    from .hub import list_models

    for name in list_models(args.pattern, pretrained=args.pretrained or None):
        print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stnviz", description="Spatial Transformer Networks: train, load, inspect, animate")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="headless showcase on built-in data; writes PNGs")
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")
    p.set_defaults(func=_demo)
    p = sub.add_parser("models", help="list architectures and trained weights")
    p.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'stn_*'")
    p.add_argument("--pretrained", action="store_true", help="only trained weights")
    p.set_defaults(func=_models)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"stnviz: error: {e}", file=sys.stderr)
        return 2
