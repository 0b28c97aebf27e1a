#!/usr/bin/env bash
# The first run on a lent GPU machine (H100/H200, Python 3.12 as python3, torch + CUDA, Triton, cuda-bindings,
# CPU onnxruntime; no scikit-video, no pycocotools, no TensorRT, no network; 600 s a command; at most 8 files
# of 16 MiB come back from $OUT): everything the CPU cannot prove, inside one command.
#
#   python3 benchmarks/gpu_check.py prepare          # HERE, before the run: sample video + wheels into
#                                                    # benchmarks/carry/ (git-ignored: pass carry=["benchmarks/carry"])
#   bash benchmarks/gpu_check.sh OUT_DIR             # THERE (no network needed)
#   bash benchmarks/gpu_check.sh OUT_DIR --dry-run   # preflight, then check that every step would start
#
# Steps (limits in seconds; they add up to at most 540, checked below):
#   preflight   what is missing (listed, not fatal); installs carried wheels into a private folder
#   doctor      evis doctor (TensorRT checks skip with the reason where TensorRT is absent)
#   cuda_tests  the CUDA / TensorRT tests
#   roi_align_kernel, torch_bench (r50 fp32/fp16 eager vs CUDA graph), letterbox, train (AMP, tiny, val AP)
# After EVERY step: SUMMARY.md is rewritten and all logs/results are re-tarred, so a run cut off at the
# command limit still returns what it did. $OUT holds exactly two files: SUMMARY.md and gpu_check.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: gpu_check.sh OUT_DIR [--dry-run]}"
DRY=0
[[ "${2:-}" == "--dry-run" ]] && DRY=1
TRAIN_MINUTES="${TRAIN_MINUTES:-1}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ -d benchmarks/carry/videos ]] && export EVIS_SAMPLE_VIDEOS="${EVIS_SAMPLE_VIDEOS:-$PWD/benchmarks/carry/videos}"
FAILED=()

declare -A LIMIT=([preflight]=20 [doctor]=150 [cuda_tests]=110 [roi_align_kernel]=40 [torch_bench]=70
                  [letterbox]=30 [train]=$(( TRAIN_MINUTES * 60 + 60 )))
TOTAL=0; for s in "${!LIMIT[@]}"; do TOTAL=$(( TOTAL + LIMIT[$s] )); done
if (( TOTAL > 540 )); then
  echo "error: step limits add up to ${TOTAL} s > 540 s (lower TRAIN_MINUTES)" >&2; exit 2
fi
echo "step limits: ${TOTAL} s in all (<= 540); work folder $WORK"

finish_step() {  # the summary and the tarball after every step
  "$PY" benchmarks/gpu_check.py summary "$WORK" >/dev/null 2>"$WORK/summary.err" || FAILED+=("summary")
  [[ -f "$WORK/SUMMARY.md" ]] && cp "$WORK/SUMMARY.md" "$OUT/SUMMARY.md"
  tar czf "$OUT/gpu_check.tar.gz.tmp" -C "$WORK" --exclude=site . 2>/dev/null && mv "$OUT/gpu_check.tar.gz.tmp" "$OUT/gpu_check.tar.gz"
}

step() {  # step NAME PROBE -- COMMAND...   (PROBE: a command that proves COMMAND would start; run in --dry-run)
  local name="$1" probe="$2"; shift 3
  local limit="${LIMIT[$name]}"
  echo "== $name (limit ${limit} s): $*"
  local start=$SECONDS rc
  if (( DRY )); then
    timeout 120 bash -c "$probe" >"$WORK/$name.probe.log" 2>&1; rc=$?
    echo "   would start: $([[ $rc == 0 ]] && echo yes || echo "NO (rc=$rc, see $name.probe.log)")"
    (( rc == 0 )) || FAILED+=("$name(probe rc=$rc)")
  else
    timeout "$limit" "$@" >"$WORK/$name.log" 2>&1; rc=$?
    echo "   rc=$rc in $((SECONDS - start)) s"
    (( rc == 0 )) || FAILED+=("$name(rc=$rc)")
  fi
  finish_step
}

# The preflight always runs (in --dry-run too): it says what this machine lacks and installs carried wheels.
echo "== preflight (limit ${LIMIT[preflight]} s)"
timeout "$(( DRY ? 120 : LIMIT[preflight] ))" "$PY" benchmarks/gpu_check.py preflight --work "$WORK" 2>&1 | tee "$WORK/preflight.log"
[[ -d "$WORK/site" ]] && export PYTHONPATH="$PYTHONPATH:$WORK/site"
finish_step

CUDA_TESTS=(tests/plugins/test_triton_kernel.py tests/trt/test_engine_build.py tests/trt/test_plugin_engines.py
            tests/trt/test_trt_backend.py tests/resize/test_resize.py)
step doctor "$PY -m efficientvis_trt doctor --help" -- \
  "$PY" -m efficientvis_trt doctor --out "$WORK/doctor"
step cuda_tests "$PY -m pytest -q -p no:cacheprovider --collect-only ${CUDA_TESTS[*]}" -- \
  "$PY" -m pytest -q -rs -p no:cacheprovider "${CUDA_TESTS[@]}"
(( DRY )) || cp "$WORK/cuda_tests.log" "$WORK/cuda_tests.txt"
step roi_align_kernel "$PY benchmarks/roi_align_kernel.py --help" -- \
  "$PY" benchmarks/roi_align_kernel.py --device cuda
(( DRY )) || grep '^|' "$WORK/roi_align_kernel.log" > "$WORK/roi_align_kernel.md"
step torch_bench "$PY benchmarks/gpu_check.py torch-bench --help" -- \
  "$PY" benchmarks/gpu_check.py torch-bench --config r50 --device cuda --out "$WORK/torch_bench.json"
step letterbox "$PY benchmarks/gpu_check.py letterbox --help" -- \
  "$PY" benchmarks/gpu_check.py letterbox --device cuda --out "$WORK/letterbox.json"
step train "$PY benchmarks/train_synthetic.py --help" -- \
  "$PY" benchmarks/train_synthetic.py --out "$WORK/train" --device cuda \
  --minutes "$TRAIN_MINUTES" --train-videos 200 --val-videos 24 --no-progress

if (( DRY )); then
  # What can run without a GPU, quickly: the bench helper on tiny/CPU and the letterbox on CPU tensors.
  "$PY" benchmarks/gpu_check.py torch-bench --config tiny --device cpu --iters 2 --warmup 1 \
    --out "$WORK/torch_bench.json" >/dev/null || FAILED+=("torch_bench(dry)")
  "$PY" benchmarks/gpu_check.py letterbox --device cpu --clips 1 --out "$WORK/letterbox.json" >/dev/null \
    || FAILED+=("letterbox(dry)")
  finish_step
fi
echo "wrote $OUT/SUMMARY.md and $OUT/gpu_check.tar.gz"
if (( ${#FAILED[@]} )); then
  echo "failed steps: ${FAILED[*]}"
  exit 1
fi
