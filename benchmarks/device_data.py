"""Move a GPU run's inputs and outputs through a size-limited transfer (a leased GPU machine takes a few tens of MB).

    # here: CamVid and the other cameras' sets, frames as JPEG (quality 90), plus the stage-1 network
    python benchmarks/device_data.py --pack ../shared/data DEST --base runs/train/camvid-cpu
    # there, after training: a run's last checkpoint in N safetensors parts, its small files in one archive
    python benchmarks/device_data.py --split runs/gpu/camvid-camera OUT
    # here again: the run folder back from those files
    python benchmarks/device_data.py --join OUT runs/train/camvid-camera

Labels stay PNG (lossless); only photographs are re-encoded. Scores published from a run are measured again on the
original PNG frames (benchmarks/cross_camera.py).
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
from pathlib import Path

import cv2
from safetensors import safe_open
from safetensors.torch import save_file

JPEG_QUALITY = 90
PHOTO_FOLDERS = {"train", "val", "test", "images", "image_2"}  # CamVid's and KITTI's folders of photographs
RUN_FILES = ("config.json", "log.jsonl", "eval.json", "hardware.json", "checkpoints/last/config.json", "checkpoints/last/trainer.json")
WEIGHTS = "checkpoints/last/model.safetensors"
PARTS = 4  # fp32 `lite` is ~50 MB: four parts of ~12.5 MB


def is_photo(rel: Path) -> bool:
    """A dataset's photograph (`rel` below the shared folder); the street photo of `images/` is scored as it is."""
    return rel.suffix.lower() == ".png" and rel.parent.name in PHOTO_FOLDERS and len(rel.parts) > 2


def pack(shared: Path, dest: Path, base: Path | None) -> None:
    """Copy `shared` to `dest` with every photograph as JPEG; the stage-1 network goes to dest/base."""
    for path in sorted(p for p in shared.rglob("*") if p.is_file()):
        rel = path.relative_to(shared)
        if rel.parts[0] == "lip-mini" or rel.parts[-2:-1] == ("camvid11",):
            continue  # not street scenes / the same labels again
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_photo(rel):
            cv2.imwrite(str(target.with_suffix(".jpg")), cv2.imread(str(path)), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        else:
            shutil.copy2(path, target)
    if base is not None:
        (dest / "base").mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "README.md"):
            if (base / name).is_file():
                shutil.copy2(base / name, dest / "base" / name)


def split(run: Path, out: Path) -> None:
    """The run's last weights in PARTS files and its small files in run.tar.gz."""
    with safe_open(run / WEIGHTS, "pt") as f:
        names, metadata = list(f.keys()), f.metadata()
        tensors = {name: f.get_tensor(name) for name in names}
    parts: list[dict] = [{} for _ in range(PARTS)]
    sizes = [0] * PARTS
    for name in sorted(names, key=lambda n: -tensors[n].numel() * tensors[n].element_size()):  # largest first
        lightest = sizes.index(min(sizes))
        parts[lightest][name] = tensors[name]
        sizes[lightest] += tensors[name].numel() * tensors[name].element_size()
    out.mkdir(parents=True, exist_ok=True)
    for i, tensors_i in enumerate(parts, 1):
        save_file(tensors_i, out / f"weights-{i}-of-{PARTS}.safetensors", metadata=metadata)
    with tarfile.open(out / "run.tar.gz", "w:gz") as tar:
        for name in RUN_FILES:
            if (run / name).is_file():
                tar.add(run / name, arcname=name)


def join(folder: Path, run: Path) -> None:
    """The run folder that `split` took apart."""
    run.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "run.tar.gz") as tar:
        tar.extractall(run, filter="data")
    tensors, metadata = {}, None
    for path in sorted(folder.glob(f"weights-*-of-{PARTS}.safetensors")):
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
            tensors.update({name: f.get_tensor(name) for name in f.keys()})
    (run / WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, run / WEIGHTS, metadata=metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--pack", nargs=2, type=Path, metavar=("SHARED", "DEST"))
    group.add_argument("--split", nargs=2, type=Path, metavar=("RUN", "OUT"))
    group.add_argument("--join", nargs=2, type=Path, metavar=("FOLDER", "RUN"))
    parser.add_argument("--base", type=Path, help="with --pack: the stage-1 network folder to take along")
    args = parser.parse_args()
    if args.pack:
        pack(*args.pack, args.base)
    elif args.split:
        split(*args.split)
    else:
        join(*args.join)


if __name__ == "__main__":
    main()
