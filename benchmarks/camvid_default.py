"""Package a CamVid training run as segrefine's embedded default model and register it in the model zoo.

The default model is trained in stages, each run starting from the one before (`--init-weights`): `camvid-cpu` from
scratch on a 2-core CPU (about 2 hours with bf16 on a CPU with AVX-512 BF16); `camvid-camera`, which fine-tunes it
for photos from other cameras on a GPU (about 7 minutes on one H200 beside the ablation's trainings:
benchmarks/gpu_camera.sh; `camvid-cpu-camera` is the same on a CPU, ~2 hours for 1200 iterations at 256×256); and
optionally `camvid-camera-trainval`, which continues it on train and val together (45 minutes on the 2-core CPU).

    # train the first two stages (each resumes if started), then package
    python benchmarks/camvid_default.py --data-root ../shared/data/camvid --shared ../shared/data --train \
        --base runs/train/camvid-cpu --run runs/train/camvid-camera
    # package a finished run; --base is the run or packaged model (with its stages) it started from
    python benchmarks/camvid_default.py --data-root ../shared/data/camvid --shared ../shared/data \
        --base runs/train/camvid-cpu --run runs/train/camvid-camera
    # a further stage on top of a packaged model (a copy of weights/lite-camvid), with the run that trained the same
    # stage on train alone, whose CamVid val score the card gives as the held-out one
    python benchmarks/camvid_default.py --data-root ../shared/data/camvid --shared ../shared/data --train \
        --recipe camvid-camera-trainval --base lite-camvid-stage2/ --run runs/train/camvid-camera-trainval \
        --held-out-twin runs/train/camvid-camera-train
    # score the packaged model again after a change to how `eval` and `predict` run (its training as recorded)
    python benchmarks/camvid_default.py --data-root ../shared/data/camvid --shared ../shared/data --rescore \
        --held-out-twin runs/train/camvid-camera-train

A run trained on another machine carries that machine in its hardware.json (benchmarks/gpu_camera.sh writes it);
otherwise this machine is named.

It evaluates the run's final checkpoint on CamVid val in fp32, stores the weights as fp16 in weights/<name>/, evaluates
that file again on CamVid val and on the other cameras' frames under --shared (benchmarks/cross_camera.py; the numbers
shipped are those of the fp16 file), writes config.json (with every stage's command, machine and time) and the model
card, and puts the entry (sha256, metrics) into weights/zoo.json as the default for segmentation and for camvid.
Every score is taken as `segrefine eval` takes it (the guided filter on), except the fp32-vs-fp16 comparison, which
scores the network's own labels. `--rescore` does the same for the model already in weights/<name>/ from its recorded
stages, without the training runs (the held-out twin's run is needed again for a model that trained on val).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from segrefine.errors import flag
from segrefine.data import build_dataset, dataset_meta
from segrefine.data.transforms import eval_transform
from segrefine.engine.config import TrainConfig, resolve_config
from segrefine.engine.evaluate import evaluate_model
from segrefine.engine.inference import InferenceOptions
from segrefine.hub.flops import count_flops
from segrefine.hub import CONFIG_NAME, RUN_LAST_DIR, WEIGHTS_NAME, load_model, model_card, save_checkpoint
from segrefine.hub.registry import DEFAULT_TASK, ZOO_FILE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from cross_camera import scores as cross_camera_scores  # noqa: E402

NETWORK = InferenceOptions(guided_filter=False)  # the network's own labels

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
BASE_RECIPE, RECIPE = "camvid-cpu", "camvid-camera"
RUNS = Path("runs/train")  # the recorded commands put each stage in runs/train/<recipe>
CAMERA = ("random white balance and per-channel gain, tone curve, stronger colour jitter, monochrome, lens blur, "
          "sensor noise, JPEG compression, vignetting")
FRAMES = {"train": "the 367 training frames", "trainval": "the 468 frames of train and val together"}
HARDWARE_FILE = "hardware.json"  # in a run folder: the machine it trained on, when not this one
SCORES = ("mIoU", "boundary_mIoU", "mAcc", "aAcc", "fwIoU")
RUNTIME_SETTINGS = {"data_root", "out", "workers", "device", "dataset", "recipe"}
LICENSE = "cc-by-nc-4.0"
PILOTS = Path(__file__).resolve().parent / "results" / "camvid-pilots.json"


def train_command(train: dict, data_root: str, run: Path) -> list[str]:
    """The `segrefine train` command line that reproduces `train`: the recipe plus a flag per changed setting."""
    recipe = resolve_config({}, {"dataset": train["dataset"], "recipe": train["recipe"]}).to_dict()
    recipe.update(recipe.pop("model"))  # network switches are flags like any other setting
    train = {**{k: v for k, v in train.items() if k != "model"}, **train.get("model", {})}
    command = ["segrefine", "train", "--dataset", train["dataset"], "--recipe", train["recipe"], "--data-root", data_root]
    for key, value in train.items():
        if key == "num_classes":  # from the dataset
            continue
        if key in RUNTIME_SETTINGS or recipe.get(key) == value or (key in ("crop", "scale") and tuple(value) == tuple(recipe[key])):
            continue
        if isinstance(value, bool):
            command.append(flag(key) if value else flag(f"no_{key}"))
        elif isinstance(value, (list, tuple)):
            command += [flag(key), ("x" if key == "crop" else ",").join(str(v) for v in value)]
        else:
            command += [flag(key), str(value)]
    return command + ["--out", str(run)]


def wall_time(run: Path) -> tuple[float, int]:
    """Seconds from the first training step to the final validation (from log.jsonl), and the iterations done."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    first = next(r for r in records if "loss" in r)
    batch = json.loads((run / CONFIG_NAME).read_text())["train"]["batch_size"]
    started = first["time"] - first["iter"] * batch / first["images_per_s"]  # the first window began at iteration 0
    return records[-1]["time"] - started, records[-1]["iter"]


def val_trajectory(run: Path) -> str:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"val"' in line]
    return ", ".join(f"{100 * r['val']['mIoU']:.1f} at iteration {r['iter']}" for r in records)


class Machine(NamedTuple):
    """Where a run trained: its description, what ran beside it, whether on a GPU, and its data when not the
    original files."""

    where: str
    beside: str = ""
    on_gpu: bool = False
    data: str = ""


def run_hardware(run: Path) -> Machine:
    """The machine a run trained on: its hardware.json, else this one."""
    path = run / HARDWARE_FILE
    if not path.is_file():
        return Machine(hardware())
    info = json.loads(path.read_text())
    cores = f"{info['cpus']} CPU cores, PyTorch {info['torch']}"
    where = f"one {info['gpu']} ({cores})" if info.get("gpu") else cores
    return Machine(where, info.get("beside", ""), bool(info.get("gpu")), info.get("data", ""))


def hardware() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} cores, PyTorch {torch.__version__}, CPU only"


def scores(report: dict) -> dict:
    return {key: report[key] for key in SCORES}


def train_stage(recipe: str, data_root: str, run: Path, *extra: str) -> None:
    """Train (or resume, or confirm finished) one stage's run folder."""
    if (run / RUN_LAST_DIR).is_dir():
        command = [sys.executable, "-m", "segrefine", "train", "--resume", "--out", str(run)]
    else:  # a run folder without a checkpoint holds nothing to keep
        command = [sys.executable, "-m", "segrefine", "train", "--dataset", "camvid", "--recipe", recipe,
                   "--data-root", data_root, *extra, "--out", str(run)]  # fmt: skip
        command += ["--overwrite"] if (run / CONFIG_NAME).is_file() else []
    subprocess.run(command, check=True)


def stage_summary(train: dict, on_gpu: bool) -> str:
    """What one stage did, in words, from its training settings."""
    frames = FRAMES.get(train["train_split"], f"the {train['train_split']} split")
    start = "from scratch" if train["init_weights"] == "none" else "the previous stage's network trained further"
    camera = f" camera-style photometric distortion ({CAMERA})," if train["photometric"] == "camera" else ""
    precision = "bf16 autocast" if train["amp"] or (train["amp"] is None and on_gpu) else "fp32"
    (lo, hi), (height, width) = train["scale"], train["crop"]
    return (f"{start} on {frames} with{camera} random scale {lo}–{hi} and {precision}, {train['iters']} iterations "
            f"of batch {train['batch_size']} at {height}×{width}")


def stage(command: str, machine: Machine, seconds: float, iters: int, train: dict) -> dict:
    return {"command": command, "hardware": machine.where, "beside": machine.beside, "train_seconds": round(seconds),
            "iterations": iters, "train_split": train["train_split"], "summary": stage_summary(train, machine.on_gpu)}


def recipe_settings(recipe: str) -> dict:
    return resolve_config({}, {"dataset": "camvid", "recipe": recipe}).to_dict()


def base_stages(base: Path) -> list[dict]:
    """The stages that made `base`: from its run's log, or from the provenance of its packaged model."""
    config = json.loads((base / CONFIG_NAME).read_text())
    provenance = config.get("provenance")
    if provenance is None:
        seconds, iters = wall_time(base)
        train = {**config["train"], "data_root": None, "out": None}
        command = " ".join(train_command(train, "CAMVID_ROOT", RUNS / train["recipe"]))
        return [stage(command, run_hardware(base), seconds, iters, train)]
    if "stages" in provenance:
        return provenance["stages"]
    # A model packaged in two stages before the stages were listed: the first is its `base`.
    first, last = provenance["base"], provenance
    return [
        stage(first["command"], Machine(first["hardware"]), first["train_seconds"], first["iterations"],
              recipe_settings(BASE_RECIPE)),
        {**stage(last["command"], Machine(last["hardware"], on_gpu="NVIDIA" in last["hardware"]),
                 last["train_seconds"], last["iterations"], config["train"]),
         "beside": "the camera ablation's trainings (benchmarks/ablation.py, four at a time)"},
    ]  # fmt: skip


def out_folder(command: str) -> str:
    """The run folder a recorded command writes (its --out)."""
    words = command.split()
    return words[words.index("--out") + 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="CamVid root (train/, trainannot/, val/, valannot/)")
    parser.add_argument("--shared", type=Path, required=True, help="folder of other cameras' labelled frames")
    parser.add_argument("--run", type=Path, help="the training run folder of the last stage (not with --rescore)")
    parser.add_argument("--recipe", default=RECIPE, help=f"the last stage's recipe, for --train (default {RECIPE})")
    parser.add_argument("--base", type=Path,
                        help=f"the run (a {BASE_RECIPE} run is trained with --train) or packaged model it starts from")
    parser.add_argument("--held-out-twin", type=Path,
                        help="for a last stage trained on val: the run of the same stage on train alone (trained by --train)")
    parser.add_argument("--train", action="store_true", help="first train the stages (resuming any started run)")
    parser.add_argument("--rescore", action="store_true",
                        help="score the packaged weights/NAME again as `eval` and `predict` now run it, keeping its "
                             "recorded stages (only the held-out twin's run is needed, where there is one)")
    parser.add_argument("--name", default="lite-camvid")
    args = parser.parse_args()
    if args.rescore == (args.run is not None) or (args.run is not None and args.base is None):
        parser.error("give --run and --base (package a run), or --rescore (score the packaged model again)")
    if args.rescore and (args.train or args.base is not None):
        parser.error("--rescore scores the packaged model as it is: no --train, no --base")

    if args.train:
        if not (args.base / CONFIG_NAME).is_file() or (args.base / "log.jsonl").is_file():
            train_stage(BASE_RECIPE, args.data_root, args.base)
        train_stage(args.recipe, args.data_root, args.run, "--init-weights", str(args.base))
        if args.held_out_twin is not None:
            train_stage(args.recipe, args.data_root, args.held_out_twin, "--init-weights", str(args.base),
                        "--train-split", "train", "--eval-every", "600")

    torch.set_num_threads(os.cpu_count() or 1)
    meta = dataset_meta("camvid")
    val = build_dataset("camvid", args.data_root, "val", eval_transform())
    folder = WEIGHTS / args.name
    packaged = rescored(folder) if args.rescore else package_run(args.run, args.base, folder, val)

    twin = None
    if args.held_out_twin is not None:
        twin_model, _ = load_model(args.held_out_twin / RUN_LAST_DIR, "cpu")
        twin_train = {**json.loads((args.held_out_twin / CONFIG_NAME).read_text())["train"], "data_root": None,
                      "out": None, "init_weights": packaged.train["init_weights"]}  # fmt: skip
        twin = {"command": " ".join(train_command(twin_train, "CAMVID_ROOT", RUNS / f"{packaged.train['recipe']}-train")),
                "camvid_val": scores(evaluate_model(twin_model, val, meta, device="cpu", progress=False))}
        print(f"held-out twin:   val mIoU {twin['camvid_val']['mIoU']:.4f}")
    elif trained_on_val(packaged.stages):
        sys.exit("--held-out-twin is needed: the last stage trained on val, and the card gives the twin's val score")

    shipped, _ = load_model(folder, "cpu")
    start = time.perf_counter()
    fp16 = evaluate_model(shipped, val, meta, device="cpu", progress=False)
    eval_seconds = time.perf_counter() - start
    print(f"fp16 file:       val mIoU {fp16['mIoU']:.4f}, boundary mIoU {fp16['boundary_mIoU']:.4f}")
    fp16_network = evaluate_model(shipped, val, meta, options=NETWORK, device="cpu", progress=False)
    cameras = cross_camera_scores(str(folder), Path(args.data_root), args.shared)
    cameras.pop("camvid-val")
    own_size = cross_camera_scores(str(folder), Path(args.data_root), args.shared, options=InferenceOptions(short_side=0))
    own_size.pop("camvid-val")

    # A model that trained on val keeps its val scores, marked as not held out (the card then claims no evaluation).
    stages = packaged.stages
    not_held_out = {"held_out": False} if trained_on_val(stages) else {}
    metrics = {"split": "val", **not_held_out, **scores(fp16), "per_class": fp16["per_class"]}
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["metrics"] = metrics
    config["provenance"] = {
        "stages": stages, "fp32_val": packaged.fp32_network, "fp16_val_network": scores(fp16_network),
        "cross_camera": cameras, "cross_camera_own_size": own_size,
        **({"held_out_twin": twin} if twin is not None else {}), "license": LICENSE,
    }  # fmt: skip
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")

    flops = count_flops(shipped.config, (360, 480))
    details = card_details(stages, packaged, fp16, fp16_network, cameras, own_size, twin, eval_seconds)
    card = model_card(config, name=args.name, params=flops.params, gmacs=flops.gmacs, input_size=(360, 480),
                      license=LICENSE, details=details)
    (folder / "README.md").write_text(card)

    digest = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    zoo_path = WEIGHTS / ZOO_FILE
    zoo = json.loads(zoo_path.read_text())
    entry = {
        "name": args.name, "variant": shipped.config.variant, "dataset": "camvid", "num_classes": meta.num_classes,
        "classes": list(meta.classes), "repo": "", "revision": "", "file": WEIGHTS_NAME, "sha256": digest,
        "metrics": {"split": "val", **not_held_out, **{k: round(v, 4) for k, v in scores(fp16).items()}},
        "default_for": [DEFAULT_TASK, "camvid"], "embedded": args.name,
    }
    zoo["models"] = [m for m in zoo["models"] if m["name"] != args.name] + [entry]
    zoo_path.write_text(json.dumps(zoo, indent=2) + "\n")
    print(f"wrote {folder} ({(folder / WEIGHTS_NAME).stat().st_size / 2**20:.1f} MiB) and the {args.name} entry in {zoo_path}")
    print("\nREADME summary:\n" + readme_summary(args.name, fp16, cameras, stages, twin, flops) + packaged.early)


class Packaged(NamedTuple):
    """What packaging knows of a model's training: its stages, the last stage's settings, the fp32 checkpoint's
    CamVid val scores (the network's own labels), and what the card says of the last run."""

    stages: list[dict]
    train: dict
    fp32_network: dict
    early: str = ""  # the sentence of `stopped_early`
    trajectory: str = ""  # the last stage's validation scores while it trained
    machine: Machine = Machine("")


def package_run(run: Path, base: Path, folder: Path, val) -> Packaged:
    """Store the last checkpoint of `run` (the stage after `base`) as fp16 in `folder`; its stages and fp32 scores."""
    meta = dataset_meta("camvid")
    run_config = json.loads((run / CONFIG_NAME).read_text())
    settings = TrainConfig.from_dict(run_config["train"])
    stages = base_stages(base)
    # The class count the network was built with (older runs did not record it); no paths of the training machine.
    settings = replace(
        settings, model=replace(settings.model, num_classes=meta.num_classes), data_root=None, out=None,
        init_weights=out_folder(stages[-1]["command"]),
    )  # fmt: skip
    train = settings.to_dict()
    model, _ = load_model(run / RUN_LAST_DIR, "cpu")
    fp32 = evaluate_model(model, val, meta, options=NETWORK, device="cpu", progress=False)
    print(f"fp32 checkpoint: val mIoU {fp32['mIoU']:.4f}, boundary mIoU {fp32['boundary_mIoU']:.4f} (network alone)")
    seconds, iters = wall_time(run)
    machine = run_hardware(run)
    command = " ".join(train_command(train, "CAMVID_ROOT", RUNS / settings.recipe))
    save_checkpoint(
        copy.deepcopy(model).half(), folder, dataset="camvid", classes=meta.classes, palette=meta.palette,
        extra={"train": train},
    )
    return Packaged(
        [*stages, stage(command, machine, seconds, iters, train)], train, scores(fp32),
        stopped_early(iters, settings.iters, settings.lr),
        val_trajectory(run) if settings.train_split == "train" else "", machine,
    )  # fmt: skip


def rescored(folder: Path) -> Packaged:
    """The recorded training of the model packaged in `folder`, to score it again."""
    config = json.loads((folder / CONFIG_NAME).read_text())
    provenance, train = config["provenance"], config["train"]
    last = provenance["stages"][-1]
    return Packaged(provenance["stages"], train, provenance["fp32_val"],
                    stopped_early(last["iterations"], train["iters"], train["lr"]))


def street_photo_line(cameras: dict) -> str:
    """The street photo's figures in one sentence ("" without the photo)."""
    photo = cameras.get("street-photo")
    if not photo:
        return ""
    return (f"On a Cityscapes street photo {100 * photo['asphalt_road']:.1f}% of the asphalt is labelled Road and "
            f"{100 * photo['sky_band_sky']:.1f}% of a sky band Sky (`python benchmarks/cross_camera.py`).")


def cross_camera_line(cameras: dict) -> str:
    """The other cameras' figures in one sentence."""
    sets = [f"{name} ({entry['images']} frame{'s' if entry['images'] > 1 else ''}) {100 * entry['mIoU']:.1f}%" for name, entry in cameras.items() if "mIoU" in entry]
    text = ("Other cameras, scored in CamVid's classes through the cityscapes:camvid class map, each photo resized to "
            "CamVid's 360-pixel shorter side and the guided filter on, as `predict` and `eval` do by default, mIoU: "
            + ", ".join(sets))
    photo = street_photo_line(cameras)  # it names the command itself
    return f"{text}. {photo}" if photo else f"{text} (`python benchmarks/cross_camera.py`)."


def own_size_line(cameras: dict) -> str:
    """The same figures with each photo at its own size, in one sentence."""
    text = "At each photo's own size (`--short-side 0`): " + ", ".join(
        f"{name} {100 * entry['mIoU']:.1f}%" for name, entry in cameras.items() if "mIoU" in entry
    )
    photo = cameras.get("street-photo")
    if photo:
        text += f"; asphalt {100 * photo['asphalt_road']:.1f}%, sky band {100 * photo['sky_band_sky']:.1f}%"
    return text + "."


def minutes(stage: dict) -> str:
    return f"{stage['train_seconds'] / 60:.0f} minutes on {stage['hardware']}"


def trained_on_val(stages: list[dict]) -> bool:
    return any(stage["train_split"] != "train" for stage in stages)


def held_out_sentence(twin: dict | None) -> str:
    """For a model that trained on CamVid val: what is held out instead."""
    text = ("The last stage trained on CamVid's validation frames too, as the papers' protocol does (it then tests on "
            "CamVid's 233 test frames, which this project does not have), so **CamVid val is not held out for this "
            "model**: its val scores are on frames it trained on. Held out are the other cameras")
    if twin is not None:
        text += (f", and the same stages with the last on train alone score {100 * twin['camvid_val']['mIoU']:.1f}% "
                 f"mIoU on CamVid val (`{twin['command']}`)")
    return text + "."


def readme_summary(name: str, report: dict, cameras: dict, stages: list[dict], twin: dict | None, flops) -> str:
    classes = " · ".join(f"{k} {100 * v['iou']:.1f}" for k, v in report["per_class"].items())
    steps = "; then ".join(f"{s['summary']} ({minutes(s)})" for s in stages)
    held_out = f" {held_out_sentence(twin)}" if trained_on_val(stages) else ""
    return (
        f"**The shipped model**, `{name}`: `lite` ({flops.params / 1e6:.2f} M parameters, {flops.gmacs:.1f} GMACs at "
        f"360×480), trained in {len(stages)} stages: {steps} (`python benchmarks/camvid_default.py --train ...`). "
        f"CamVid val (101 frames, whole image, single scale, guided filter): **mIoU {100 * report['mIoU']:.1f}%**, "
        f"boundary mIoU {100 * report['boundary_mIoU']:.1f}%, pixel accuracy {100 * report['aAcc']:.1f}%.{held_out} "
        f"{cross_camera_line(cameras)} Per class on CamVid val (IoU %): {classes}."
    )


def pilots_section() -> str:
    """How the recipe was chosen: the rows of benchmarks/camvid_pilots.py."""
    if not PILOTS.is_file():
        return ""
    pilots = json.loads(PILOTS.read_text())
    rows = "\n".join(
        f"| `{' '.join(r['flags']) or '(the recipe)'}` | {100 * r['mIoU']:.1f} | {100 * r['boundary_mIoU']:.1f} | "
        f"{100 * r['per_class']['Pole']:.1f} | {100 * r['per_class']['Pedestrian']:.1f} |"
        for r in pilots["rows"]
    )
    return f"""### How the recipe was chosen

Pilot runs of {pilots['iters']} iterations each (`python benchmarks/camvid_pilots.py`), val %:

| flags on top of `--recipe camvid-cpu` | mIoU | boundary mIoU | Pole IoU | Pedestrian IoU |
|---|---|---|---|---|
{rows}

Without class weighting the thin and rare classes (Pole, SignSymbol, Fence, Pedestrian, Bicyclist) stay at 0 IoU
early on; ENet's weighting 1/ln(1.02 + p) lifts them, so the recipe uses it. bf16 autocast with channels-last
memory trains 2.5× faster than fp32 on this CPU (0.73 vs 1.84 s per batch of 8 at 256×256;
`python benchmarks/train_step_speed.py`), which is what makes
6000 iterations fit in two hours. 256×256 crops with scale 0.5–1.5 keep whole cars and pedestrians in view at a
cost the CPU can pay."""


def stopped_early(iters: int, scheduled: int, lr: float) -> str:
    """A sentence for a checkpoint taken before its schedule ended ("" when it ran to the end)."""
    if iters >= scheduled:
        return ""
    at = lr * (1 - iters / scheduled) ** 0.9
    return (f" The shipped weights are the run's checkpoint at iteration {iters} of its {scheduled}-iteration schedule "
            f"(learning rate {at:.4f} there, not yet decayed to 0): the machine's time ran out first. Checkpoints are "
            f"written every 100 iterations and the data order and augmentation are seeded by position, so the same "
            f"command stopped at iteration {iters} (or its checkpoints/last at that point) reproduces it.")


def card_details(stages: list[dict], packaged: Packaged, fp16: dict, fp16_network: dict, cameras: dict,
                 own_size: dict, twin: dict | None, eval_seconds: float) -> str:
    rows = "\n".join(
        f"| {name} | {100 * v['iou']:.2f} | {100 * v['boundary_iou']:.2f} |" for name, v in fp16["per_class"].items()
    )
    camera_rows = "\n".join(
        f"| {name} | {entry['images']} | {100 * entry['mIoU']:.2f} | {100 * entry['boundary_mIoU']:.2f} |"
        for name, entry in cameras.items() if "mIoU" in entry
    )
    on_val = trained_on_val(stages)
    data = (", and evaluated on its 101 validation frames (never trained on)." if not on_val else
            f". {held_out_sentence(twin)}")
    steps = "\n\n".join(
        f"**Stage {i}**: {s['summary']}; {minutes(s)}{', beside ' + s['beside'] if s.get('beside') else ''}."
        f"{packaged.early if i == len(stages) else ''}\n\n```bash\n{s['command']}\n```"
        for i, s in enumerate(stages, 1)
    )
    data_note = f" ({packaged.machine.data})" if packaged.machine.data else ""
    during = (f"\n\nValidation mIoU during stage {len(stages)}{data_note}: {packaged.trajectory}."
              if packaged.trajectory else "")
    return f"""## Data and licence

Trained from scratch (no ImageNet weights) on the 367 training frames of CamVid (Brostow et al. 2008) in the 11-class
SegNet release at 360×480{data} That release of CamVid is licensed **CC BY-NC 4.0** (non-commercial research use),
and so are these weights.

## Training

{steps}

The camera ingredients were chosen by the camera rows of `benchmarks/ablation.py`, and a stage on train and val by the
rows of a longer schedule beside them (the README's ablation section).{during}

{pilots_section()}

## Other cameras

A model trained on one camera learns that camera's colour rendering: stage 1 alone labels the asphalt of a Cityscapes
photo as Tree. Scored on every labelled frame from other cameras this project holds, in CamVid's 11 classes through
the built-in `cityscapes:camvid` class map (`segrefine eval --dataset kitti --class-map cityscapes:camvid`; terrain,
which CamVid has no class for, ignored), each photo first resized to CamVid's 360-pixel shorter side and the class
boundaries snapped to its edges by the guided filter (the defaults of `eval` and `predict`; `--short-side 0` scores each
at its own size), %:

| frames | images | mIoU | boundary mIoU |
|---|---|---|---|
{camera_rows}

{street_photo_line(cameras)} {own_size_line(own_size)}

## Per-class results (CamVid val{", frames it trained on" if on_val else ""}, %)

Whole image, single scale, with the guided filter (the default of `eval` and `predict`; the network's own labels,
`--no-guided-filter`: mIoU {100 * fp16_network['mIoU']:.2f}, boundary mIoU {100 * fp16_network['boundary_mIoU']:.2f}).
The weights are stored as fp16 (loaded into fp32): the network's own labels score {100 * fp16_network['mIoU']:.2f}
from the fp16 file vs {100 * packaged.fp32_network['mIoU']:.2f} from the fp32 checkpoint. Boundary IoU counts pixels
within 2% of the image diagonal of a class boundary. Evaluating the 101 frames took {eval_seconds:.0f} s.

| class | IoU | boundary IoU |
|---|---|---|
{rows}"""


if __name__ == "__main__":
    main()
