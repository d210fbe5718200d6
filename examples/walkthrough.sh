#!/usr/bin/env bash
# train -> eval -> predict on `toy`, segrefine's generated street scenes: nothing to download, a CPU is enough.
#
#   bash examples/walkthrough.sh              # ITERS=300: a few minutes on a laptop CPU, a rough model
#   ITERS=600 bash examples/walkthrough.sh    # the toy recipe's full schedule (600 iterations, ~9 minutes on 2 CPU
#                                             # cores): a model that has learned the scenes
set -euo pipefail
cd "$(dirname "$0")/.."

ITERS=${ITERS:-300}
RUN=${RUN:-runs/train/toy-walkthrough}
OUT=${OUT:-runs/predict/toy-walkthrough}

# 1. Train the `lite` network with the toy recipe (128x128 crops, batch 8, lr 0.02, no ImageNet download).
#    The run folder gets config.json, log.jsonl, eval.json and checkpoints/{best,last}; it is a weights reference.
#    --overwrite: running the walk-through again starts its run over (train refuses a folder holding a run without it).
segrefine train --dataset toy --iters "$ITERS" --eval-every "$ITERS" --out "$RUN" --overwrite

# 2. Score it on the 100 validation scenes (fractions in [0, 1]; add --json for one JSON object).
segrefine eval --dataset toy --split val --weights "$RUN"

# 3. Segment the example image: OUT/toy-street_{label,color,overlay}.png. Folders, globs and videos work the same way.
segrefine predict examples/toy-street.png --weights "$RUN" --out "$OUT" --overwrite

# 4. The same from Python.
python examples/python_api.py --weights "$RUN" --out "$OUT/api"
