#!/usr/bin/env bash
# The whole GPU check in one command, under 10 minutes, for whenever a CUDA machine is lent:
#
#   bash bench/gpu.sh                 (from the repository root, the project installed)
#
# 1. bench/cuda.py: the measured peak, then fast / adain / optimize on CUDA (fp32 against the
#    engine's bf16/fp16 autocast, channels_last, cuDNN benchmark mode, a batch of 8 fast images).
# 2. bench/service.py --quick: a short run of the farm with a CUDA worker (PostgreSQL + S3 when
#    initdb is installed, else SQLite + local storage): latency, per-job overhead, 1 vs 2 workers.
# 3. The resumable AdaIN decoder training (stylefarm train adain) for the minutes left, from
#    $ADAIN_RUN/checkpoint.pt when there is one (or $ADAIN_RESUME, a checkpoint carried from an
#    earlier lease), then the checkpoint is left in $OUT so the next lease goes on from it.
#
# Environment: PYTHON (default .venv/bin/python, else python3), OUT (results; default a temp
# folder), BUDGET_S (default 570), ADAIN_CONTENT / ADAIN_STYLE (image folders; default
# /work/data/adain/{content,style}; training is skipped, and said so, when they are missing),
# ADAIN_RUN (training work dir, default $OUT/adain-run), ADAIN_RESUME (a checkpoint.pt to start from).
# Exit status: 1 when a benchmark missed a goal or failed; training is best-effort (its status is printed).
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET_S=${BUDGET_S:-570}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${OUT:-$(mktemp -d -t stylefarm-gpu-XXXX)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
status=0

{
  echo "# stylefarm GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} | tee "$OUT/gpu_check.txt"

echo "== 1. engine on CUDA ($(left) s left)" | tee -a "$OUT/gpu_check.txt"
timeout 240 "$PY" bench/cuda.py --json "$OUT/cuda.json" 2>&1 | grep -v -e '^USDT' | tee "$OUT/cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 2. the farm with a CUDA worker ($(left) s left)" | tee -a "$OUT/gpu_check.txt"
backend=sqlite-local
if "$PY" -c "import sys; sys.path.insert(0, 'tests'); from harness import find_pg_bindir; sys.exit(find_pg_bindir() is None)"; then
  backend=postgres-s3
fi
STYLEFARM_ALLOW_MISSING_BACKENDS=1 timeout 180 "$PY" bench/service.py --quick --backend "$backend" \
  --json "$OUT/service.json" 2>&1 | tail -30 | tee "$OUT/service.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

CONTENT=${ADAIN_CONTENT:-/work/data/adain/content}
STYLE=${ADAIN_STYLE:-/work/data/adain/style}
RUN=${ADAIN_RUN:-$OUT/adain-run}
remaining=$(( $(left) - 45 ))  # the export and the copy back
echo "== 3. AdaIN decoder training, resumable (${remaining} s of training left)" | tee -a "$OUT/gpu_check.txt"
if [ ! -d "$CONTENT" ] || [ ! -d "$STYLE" ]; then
  echo "skipped: no training images at $CONTENT and $STYLE (set ADAIN_CONTENT / ADAIN_STYLE;" \
       "deploy/train/prepare_adain_data.py makes them)" | tee -a "$OUT/gpu_check.txt"
elif [ "$remaining" -lt 60 ]; then
  echo "skipped: under a minute left" | tee -a "$OUT/gpu_check.txt"
else
  mkdir -p "$RUN"
  if [ -n "${ADAIN_RESUME:-}" ] && [ ! -f "$RUN/checkpoint.pt" ]; then cp "$ADAIN_RESUME" "$RUN/checkpoint.pt"; fi
  minutes=$(awk -v s="$remaining" 'BEGIN { printf "%.2f", (s - 30) / 60 }')  # 30 s for start-up and the last checkpoint
  timeout "$remaining" "$PY" -m shared.cli.main train adain --content-dataset "$CONTENT" --style-dataset "$STYLE" \
    --work-dir "$RUN" -o "$RUN/adain-decoder.pt" --image-size 256 --batch-size 8 --steps 1000000 \
    --learning-rate 1e-4 --lr-decay 5e-5 --checkpoint-every 2000 --max-minutes "$minutes" --device cuda -q \
    2>&1 | tail -5 | tee -a "$OUT/gpu_check.txt"
  echo "training exit status ${PIPESTATUS[0]} (a --max-minutes stop is a clean stop)" | tee -a "$OUT/gpu_check.txt"
  if [ -f "$RUN/checkpoint.pt" ]; then
    if "$PY" deploy/train/export_adain_decoder.py --help 2>/dev/null | grep -q -- --resumable; then
      "$PY" deploy/train/export_adain_decoder.py --checkpoint "$RUN/checkpoint.pt" --out "$OUT/adain-resumable.pt" \
        --resumable 2>&1 | tail -2 | tee -a "$OUT/gpu_check.txt"
    elif [ "$RUN" != "$OUT/adain-run" ]; then
      cp "$RUN/checkpoint.pt" "$OUT/adain-checkpoint.pt"
    fi
    echo "carry the checkpoint in $OUT to the next lease: ADAIN_RESUME=<it> bash bench/gpu.sh" | tee -a "$OUT/gpu_check.txt"
  fi
fi
echo "== done in $(( $(date +%s) - START )) s, status $status; results in $OUT" | tee -a "$OUT/gpu_check.txt"
exit $status
