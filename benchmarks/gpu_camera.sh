#!/usr/bin/env bash
# The camera work on one GPU in one short slot: stage 2 of the default model (recipe camvid-camera, fine-tuning the
# stage-1 network for photos from any camera) and, beside it, the ablation rows that decide its ingredients and the
# SRM question (benchmarks/ablation.py, four trainings at once), all in about 8 minutes on one H200.
#
#     benchmarks/gpu_camera.sh DATA BASE OUT
#
# DATA: a folder laid out like ../shared/data (camvid/, other cameras' labelled sets, images/street-*.png); frames
#       may be JPEG (benchmarks/device_data.py makes such a copy small enough to travel).
# BASE: the stage-1 network (run, checkpoint or model folder) that stage 2 and every ablation row start from.
# OUT:  where results go, in seven files: ablation-camvid-gpu.json (written as rows finish), the stage-2 run's last
#       weights in four parts with its small files in run.tar.gz (`benchmarks/device_data.py --join OUT RUN` puts the
#       run folder together again), and logs.tar.gz (hardware.json, cross-camera-gpu.json, every log).
#
# Settings (environment): STAGE2_ITERS (the recipe's), STAGE2_WORKERS (4), ABLATION_ITERS (400), CROP (360x480),
# BATCH (16), JOBS (4), WORKERS (3, per ablation training), DEADLINE (seconds after which no ablation training starts; 300), LIMIT (seconds after which stage 2 is
# stopped at its last checkpoint; 450), ROWS (ablation rows), RUNS (run folders; runs/gpu).
set -u -o pipefail
DATA=$1 BASE=$2 OUT=$3
RUNS=${RUNS:-runs/gpu}
ROWS=${ROWS:-photometric-none photometric-camera photometric-camera-scale2 photometric-camera-scale2-srm-bilinear}
LIMIT=${LIMIT:-450}
LOGS=$RUNS/logs
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$LOGS"
START=$SECONDS

"$PY" -c 'import json, os, platform, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
print(json.dumps({"gpu": gpu, "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                  "beside": "the camera ablation'"'"'s trainings (benchmarks/ablation.py, four at a time)"}))' \
    >"$LOGS/hardware.json"
cat "$LOGS/hardware.json"

stage2=(train --dataset camvid --recipe camvid-camera --data-root "$DATA/camvid" --init-weights "$BASE"
        --workers "${STAGE2_WORKERS:-4}" --save-every 250 --out "$RUNS/camvid-camera")
[ -n "${STAGE2_ITERS:-}" ] && stage2+=(--iters "$STAGE2_ITERS" --eval-every "$STAGE2_ITERS")
[ -n "${STAGE2_CROP:-}" ] && stage2+=(--crop "$STAGE2_CROP")
"$PY" -m segrefine "${stage2[@]}" >"$LOGS/stage2.log" 2>&1 &
STAGE2=$!

# shellcheck disable=SC2086  # ROWS is a list
"$PY" benchmarks/ablation.py --data-root "$DATA/camvid" --shared "$DATA" --backbone "$BASE" --rows $ROWS \
    --iters "${ABLATION_ITERS:-400}" --crop "${CROP:-360x480}" --batch-size "${BATCH:-16}" --jobs "${JOBS:-4}" \
    --workers "${WORKERS:-3}" --deadline "${DEADLINE:-300}" --runs "$RUNS/ablation" \
    --results "$OUT/ablation-camvid-gpu.json" >"$LOGS/ablation.log" 2>&1
echo "ablation done (exit $?) at $((SECONDS - START)) s"

while kill -0 $STAGE2 2>/dev/null && [ $((SECONDS - START)) -lt "$LIMIT" ]; do sleep 2; done
if kill -0 $STAGE2 2>/dev/null; then
    echo "stage 2 still running at $((SECONDS - START)) s: stopped at its last checkpoint"
    kill -INT $STAGE2
fi
wait $STAGE2
echo "stage 2 done (exit $?) at $((SECONDS - START)) s"

"$PY" benchmarks/cross_camera.py --weights "$RUNS/camvid-camera" --camvid-root "$DATA/camvid" --shared "$DATA" \
    --device auto --results "$LOGS/cross-camera-gpu.json" >"$LOGS/cross-camera.log" 2>&1
# the packaging names the machine, and the data when it was a JPEG copy, from the run's hardware.json
"$PY" -c 'import json, pathlib, sys
info = json.loads(pathlib.Path(sys.argv[1]).read_text())
if any(pathlib.Path(sys.argv[2]).glob("*.jpg")):
    info["data"] = "measured on a JPEG copy of the val frames, quality 90"
print(json.dumps(info))' "$LOGS/hardware.json" "$DATA/camvid/val" >"$RUNS/camvid-camera/hardware.json"
"$PY" benchmarks/device_data.py --split "$RUNS/camvid-camera" "$OUT"
for log in "$RUNS"/ablation/*/train.log; do cp "$log" "$LOGS/$(basename "$(dirname "$log")").log"; done
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" .
tail -n 30 "$LOGS/ablation.log"
tail -n 5 "$LOGS/stage2.log"
cat "$LOGS/cross-camera.log"
echo "all done at $((SECONDS - START)) s"
