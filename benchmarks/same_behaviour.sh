#!/usr/bin/env bash
# Behaviour unchanged by a refactor: the same graphs and results from revision REV and from this checkout.
#
#   bash benchmarks/same_behaviour.sh REV [WORK]
#
# For each side: export the shipped tiny model, build its int8 graph (4 calibration clips), run 30 frames of
# bikes.mp4 through ONNX Runtime at int8, and two copies through fp32 with --streams 2. Then compares
# model.onnx, model.int8.onnx and every results JSON byte for byte (videos.json names the bundle path, so
# it is compared without it). Exit 1 when anything differs. Needs this checkout's venv (`evis` installed).
set -euo pipefail
REV="${1:?usage: same_behaviour.sh REV [WORK]}"
WORK="${2:-$(mktemp -d)}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
rm -rf "$WORK/rev"
git -C "$HERE" worktree add -q --detach "$WORK/rev" "$REV"
trap 'git -C "$HERE" worktree remove --force "$WORK/rev"' EXIT
VIDEO="$(python -c "from efficientvis_trt.video import sample_video; print(sample_video('bikes.mp4'))")"
for side in rev here; do
  src="$([[ $side == rev ]] && echo "$WORK/rev" || echo "$HERE")"
  out="$WORK/out-$side"; rm -rf "$out"; mkdir -p "$out"
  echo "== $side ($src)"
  (
    cd "$src"; export PYTHONPATH="$src"
    python -m efficientvis_trt export efficientvis_trt/assets/tiny_synthetic.pt --out "$out/b"
    python -m efficientvis_trt build "$out/b" --precision int8 --calib-clips 4
    python -m efficientvis_trt infer "$out/b" "$VIDEO" --backend ort --precision int8 --max-frames 30 \
      --out "$out/r" --no-progress
    python -m efficientvis_trt infer "$out/b" "$VIDEO" "$VIDEO" --backend ort --precision fp32 --streams 2 \
      --max-frames 30 --out "$out/r2" --no-progress
  ) >"$out/log" 2>&1 || { echo "$side failed: see $out/log"; exit 1; }
done
differ=0
for f in b/model.onnx b/model.int8.onnx $(cd "$WORK/out-rev" && ls r/*.json r2/*.json); do
  if [[ $f == */videos.json ]]; then
    same() { grep -v '"source"' "$1"; }
    cmp -s <(same "$WORK/out-rev/$f") <(same "$WORK/out-here/$f") && echo "same: $f (but its bundle path)" \
      || { echo "DIFFERS: $f"; differ=1; }
  else
    cmp -s "$WORK/out-rev/$f" "$WORK/out-here/$f" && echo "same: $f" || { echo "DIFFERS: $f"; differ=1; }
  fi
done
exit "$differ"
