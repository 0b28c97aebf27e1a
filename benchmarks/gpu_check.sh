#!/usr/bin/env bash
# The first run on a GPU machine: everything the CPU cannot prove, in under 10 minutes on an H200.
#
#   bash benchmarks/gpu_check.sh OUT_DIR            # run it (no network needed)
#   bash benchmarks/gpu_check.sh OUT_DIR --dry-run  # print the steps; run the CPU-safe python parts quickly
#
# Steps (each logs to OUT_DIR/<step>.log; a failing step is recorded and the rest still run):
#   1. evis doctor                         -> OUT_DIR/doctor/doctor.json (TensorRT checks skip with the reason if absent)
#   2. the CUDA / TensorRT tests           -> OUT_DIR/cuda_tests.txt
#   3. RoIAlign kernel benchmark           -> OUT_DIR/roi_align_kernel.md
#   4. r50 PyTorch CUDA fp32/fp16, eager and CUDA graph -> OUT_DIR/torch_bench.json
#   5. AMP training of tiny on the synthetic split, with val AP -> OUT_DIR/train/result.json
#   6. host vs device letterbox, 720p and 1080p             -> OUT_DIR/letterbox.json
#   7. OUT_DIR/SUMMARY.md: the figures benchmarks/RESULTS.md needs ("not available" for absent TensorRT)
# Expected on an H200 about 7-8 minutes; the per-step time limits add up to 14 at worst.
# Figures are copied into RESULTS.md by hand, with the machine and date SUMMARY.md names.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: gpu_check.sh OUT_DIR [--dry-run]}"
DRY=0
[[ "${2:-}" == "--dry-run" ]] && DRY=1
TRAIN_MINUTES="${TRAIN_MINUTES:-3}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FAILED=()

step() {  # step NAME TIMEOUT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  echo "== $name: $*"
  if (( DRY )); then return 0; fi
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - start)) s (log: $OUT/$name.log)"
  (( rc == 0 )) || FAILED+=("$name(rc=$rc)")
}

step doctor 150 "$PY" -m efficientvis_trt doctor --out "$OUT/doctor"
step cuda_tests 150 "$PY" -m pytest -q -rs -p no:cacheprovider \
  tests/plugins/test_triton_kernel.py tests/trt/test_engine_build.py tests/trt/test_plugin_engines.py \
  tests/trt/test_trt_backend.py tests/resize/test_resize.py
(( DRY )) || cp "$OUT/cuda_tests.log" "$OUT/cuda_tests.txt"
step roi_align_kernel 60 "$PY" benchmarks/roi_align_kernel.py --device cuda
(( DRY )) || grep '^|' "$OUT/roi_align_kernel.log" > "$OUT/roi_align_kernel.md"
step torch_bench 120 "$PY" benchmarks/gpu_check.py torch-bench --config r50 --device cuda --out "$OUT/torch_bench.json"
step letterbox 60 "$PY" benchmarks/gpu_check.py letterbox --device cuda --out "$OUT/letterbox.json"
step train $(( TRAIN_MINUTES * 60 + 120 )) "$PY" benchmarks/train_synthetic.py --out "$OUT/train" --device cuda \
  --minutes "$TRAIN_MINUTES" --train-videos 200 --val-videos 24 --no-progress

if (( DRY )); then
  # What can run without a GPU, quickly: the bench helper on tiny/CPU and the summary of an empty run.
  "$PY" benchmarks/gpu_check.py torch-bench --config tiny --device cpu --iters 2 --warmup 1 \
    --out "$OUT/torch_bench.json" >/dev/null || FAILED+=("torch_bench(dry)")
  "$PY" benchmarks/gpu_check.py letterbox --device cpu --clips 1 --out "$OUT/letterbox.json" >/dev/null \
    || FAILED+=("letterbox(dry)")
fi
"$PY" benchmarks/gpu_check.py summary "$OUT" >/dev/null || FAILED+=("summary")
echo "wrote $OUT/SUMMARY.md"
if (( ${#FAILED[@]} )); then
  echo "failed steps: ${FAILED[*]}"
  exit 1
fi
