"""Milliseconds per toy scene (`segrefine.data.toy.render`), the cost of every toy dataset item.

    python benchmarks/toy_render.py                  # 128x256, the toy default
    python benchmarks/toy_render.py --size 512x1024 --scenes 50
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from segrefine.data.toy import DEFAULT_SIZE, render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="x".join(map(str, DEFAULT_SIZE)), help="HxW of each scene")
    parser.add_argument("--scenes", type=int, default=20, help="timed scenes, after one warm-up")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    render(rng, height, width)
    start = time.process_time()
    for _ in range(args.scenes):
        render(rng, height, width)
    print(f"{1000 * (time.process_time() - start) / args.scenes:.1f} ms CPU per {height}x{width} scene")


if __name__ == "__main__":
    main()
