"""Command line: ``python -m gamma_kit.synth --out DIR --train N --test M --seed S [--sizes WxH,...]``."""
from __future__ import annotations

import argparse
import sys
import time

from gamma_kit.cli import run_cli
from gamma_kit.synth.writer import DEFAULT_SIZES, generate, parse_sizes


def build_parser() -> argparse.ArgumentParser:
    default_sizes = ",".join(f"{w}x{h}" for w, h in DEFAULT_SIZES)
    p = argparse.ArgumentParser(prog="python -m gamma_kit.synth",
                                description="Write a synthetic data set in the GAMMA task 2 (fovea) and task 3 "
                                            "(disc/cup) layouts, with test ground truth in testing_GT/.")
    p.add_argument("--out", required=True, help="new or empty output folder (never overwritten)")
    p.add_argument("--train", type=int, default=100, help="training images (ids 0001...; default 100)")
    p.add_argument("--test", type=int, default=100, help="testing images, ids continue after training (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same arguments give identical files")
    p.add_argument("--sizes", default=default_sizes,
                   help=f"comma-separated camera sizes WIDTHxHEIGHT, used in turn (default {default_sizes})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _generate(args))


def _generate(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    out = generate(args.out, args.train, args.test, args.seed, parse_sizes(args.sizes), progress=not args.quiet)
    n = args.train + args.test
    seconds = time.perf_counter() - start
    print(f"wrote {n} synthetic images ({args.train} training, {args.test} testing) to {out} "
          f"in {seconds:.1f} s ({seconds / n:.2f} s per image)")


if __name__ == "__main__":
    sys.exit(main())
