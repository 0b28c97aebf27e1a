#!/usr/bin/env bash
# The runtime install (`.[cpu]`, no torch) on every CPython pyenv has (3.10 .. 3.13) runs `evis infer --backend ort`
# on a bundle exported in this run by the current (3.11, torch) venv; each must write the same results.json, byte
# for byte, as the 3.11 runtime install. All share .ci/runtime-constraints.txt (one ONNX Runtime for every Python).
# Each venv is cached under $EVIS_PY_CACHE, rebuilt when pyproject.toml or a constraints file changes.
# Run from .ci/run inside the activated CI venv.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${EVIS_PY_CACHE:-${TMPDIR:-/tmp}/evis-ci-pythons}"
# 3.11 first: its result is the reference the others must equal
PYTHONS="${EVIS_CROSS_PYTHONS:-$(for v in 3.11 3.10 3.12 3.13; do ls -d "$HOME"/.pyenv/versions/$v.* 2>/dev/null | tail -1; done | sed 's|$|/bin/python|' | tr '\n' ' ')}"
[ "$(echo $PYTHONS | wc -w)" -ge 2 ] || { echo "cross_python: error: fewer than two CPythons found (set EVIS_CROSS_PYTHONS)" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
STAMP="$(cat pyproject.toml .ci/constraints.txt .ci/runtime-constraints.txt | sha256sum | cut -c1-16)"
start=$(date +%s)

VIDEO="$(python -c "from efficientvis_trt.video import sample_video; print(sample_video('carphone_pristine.mp4'))")"
cp "$VIDEO" "$WORK/clip.mp4"
quiet() { "$@" >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; echo "cross_python: error: failed: $*" >&2; exit 1; }; }
quiet evis export efficientvis_trt/assets/tiny_synthetic.pt --out "$WORK/bundle"
echo "cross_python: $(python -c 'import platform; print(platform.python_version())') (torch) exported the bundle"
REF=""

for PY in $PYTHONS; do
    [ -x "$PY" ] || { echo "cross_python: error: $PY is not an interpreter" >&2; exit 2; }
    VER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    VENV="$CACHE/py$VER"
    t0=$(date +%s)
    if [ "$(cat "$VENV/.evis-stamp" 2>/dev/null)" != "$STAMP" ]; then
        rm -rf "$VENV"
        quiet "$PY" -m venv "$VENV"
        quiet "$VENV/bin/python" -m pip install -q --upgrade pip
        quiet "$VENV/bin/python" -m pip install -q -c .ci/constraints.txt -c .ci/runtime-constraints.txt -e ".[cpu]"
        echo "$STAMP" > "$VENV/.evis-stamp"
    fi
    if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        echo "cross_python: error: torch is importable in the $VER runtime venv; the runtime must not need it" >&2
        exit 1
    fi
    # the checkout, not the copy an older cached venv may point at
    PYTHONPATH="$PWD" quiet "$VENV/bin/evis" infer "$WORK/bundle" "$WORK/clip.mp4" --backend ort \
        --out "$WORK/out-$VER" --no-progress
    if [ -z "$REF" ]; then
        REF="$VER"
        echo "cross_python: $VER (no torch) ran the bundle: the reference ($(( $(date +%s) - t0 )) s)"
        continue
    fi
    if ! cmp -s "$WORK/out-$REF/results.json" "$WORK/out-$VER/results.json"; then
        echo "cross_python: error: Python $VER's results.json differs from Python $REF's" >&2
        exit 1
    fi
    echo "cross_python: $VER (no torch) results.json identical to $REF's ($(( $(date +%s) - t0 )) s)"
done
echo "cross_python: done in $(( $(date +%s) - start )) s"
