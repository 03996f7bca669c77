"""`tim-bag`: the command line of tim_fusion_ros.bag (make) and tim_fusion_ros.replay (replay, eval)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tim_core.commands.common import run_command

from .bag import make_bag
from .replay import evaluate_replay, replay


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 1")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tim-bag", description="rosbag2 tools: make, replay, eval")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make", help="image folders -> rosbag2 (sqlite3, storage version 8)")
    p.add_argument("--ir", required=True, type=Path)
    p.add_argument("--vis", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="bag folder to create (must not exist)")
    p.add_argument("--rate", type=positive_float, default=10.0, help="pairs per second (default 10)")
    p.add_argument("--jitter-ms", type=float, default=2.0, help="per-camera stamp jitter, std (default 2 ms)")
    p.add_argument("--offset-ms", type=float, default=5.0, help="IR stamp minus VIS stamp (default 5 ms)")
    p.add_argument("--ir-encoding", choices=("mono8", "mono16"), default="mono8")
    p.add_argument("--loops", type=positive_int, default=1, help="repeat the folder this many times")
    p = sub.add_parser("replay", help="replay a bag through the running node and record its outputs")
    p.add_argument("bag", type=Path)
    p.add_argument("--out", required=True, type=Path, help="bag folder to record into (must not exist)")
    p.add_argument("--namespace", default="", help="the node's namespace")
    p.add_argument("--rate", type=positive_float, default=1.0,
                   help="replay speed factor (default 1.0: original timing)")
    p.add_argument("--linger", type=float, default=5.0, help="seconds to wait for outputs after the last input")
    p = sub.add_parser("eval", help="metrics, drops, latency and throughput of a recorded replay")
    p.add_argument("recorded", type=Path)
    p.add_argument("--source", required=True, type=Path, help="the bag that was replayed")
    p.add_argument("--out", required=True, type=Path, help="folder for images and eval.json / eval.md")
    p.add_argument("--convention", default="matlab", choices=("matlab", "cddfuse"))
    args = parser.parse_args(argv)
    return run_command(f"tim-bag {args.command}", _run, args, (RuntimeError, ValueError, OSError))


def _run(args: argparse.Namespace) -> int:
    if args.command == "make":
        n = make_bag(args.ir, args.vis, args.out, args.rate, args.jitter_ms, args.offset_ms, args.ir_encoding,
                     args.loops)
        print(f"tim-bag make: {n} pairs -> {args.out}")
    elif args.command == "replay":
        res = replay(args.bag, args.out, args.namespace, args.rate, args.linger)
        print(f"tim-bag replay: {res['pairs']} pairs replayed, outputs recorded in {args.out}")
    else:
        s = evaluate_replay(args.recorded, args.source, args.out, args.convention)
        print((args.out / "eval.md").read_text())
        print(f"dropped by reason: {s['dropped_by_reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
