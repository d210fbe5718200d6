#!/usr/bin/env bash
# Multi-GPU training and evaluation with torchrun: one process per GPU on this machine.
#
#   GPUS=4 DATA=/data/cityscapes bash examples/torchrun.sh
#
# --batch-size is the TOTAL over all GPUs (the recipe's 16 for Cityscapes = 2 per GPU on 8 GPUs) and must divide
# by the number of processes; BatchNorm is synchronised across GPUs; only rank 0 writes the run folder and logs.
# On several machines, replace --standalone by --nnodes N --node-rank I --rdzv-endpoint HOST:PORT on each of them.
set -euo pipefail

GPUS=${GPUS:-$(nvidia-smi --list-gpus | wc -l)}
DATA=${DATA:-data/cityscapes}
RUN=${RUN:-runs/train/lite-cityscapes}

# Cityscapes recipe (mmsegmentation / SFNet conventions; `segrefine datasets` lists it): 1024x1024 crops, batch 16, 80k iterations, OHEM loss, ImageNet-initialised backbone.
torchrun --standalone --nproc-per-node "$GPUS" -m segrefine train \
    --dataset cityscapes --data-root "$DATA" --variant lite --batch-size 16 --out "$RUN"

# Evaluation, the val images split over the GPUs: the headline protocol (whole image, single scale) ...
torchrun --standalone --nproc-per-node "$GPUS" -m segrefine eval \
    --dataset cityscapes --data-root "$DATA" --weights "$RUN"

# ... and the test-time-augmented one: sliding 1024x1024 windows, scales 0.5-1.75 and flip.
torchrun --standalone --nproc-per-node "$GPUS" -m segrefine eval \
    --dataset cityscapes --data-root "$DATA" --weights "$RUN" \
    --mode slide --crop 1024x1024 --scales 0.5,0.75,1.0,1.25,1.5,1.75 --flip
