"""Regenerate `examples/toy-street.png`: a 256×512 street scene drawn by segrefine's toy generator.

Nobody's photograph: the scene is computed from a seed, so the project may redistribute it freely. It is the demo
input of `segrefine predict examples/toy-street.png --weights RUN` and of `examples/python_api.py`.

    python examples/make_example_image.py
"""

from __future__ import annotations

from pathlib import Path

import cv2

from segrefine.data import build_dataset

HERE = Path(__file__).resolve().parent
SIZE = (256, 512)  # H, W
SCENE = 0  # index in the toy test split: a scene showing every class (cars, people, poles, signs, trees)


def main() -> None:
    scene = build_dataset("toy", None, "test", size=SIZE, length=SCENE + 1)[SCENE]
    rgb = scene["image"].permute(1, 2, 0).numpy()
    path = HERE / "toy-street.png"
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"cannot write {path}")
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
