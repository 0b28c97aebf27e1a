#!/usr/bin/env bash
# The PTX compile at the Triton floor (MIN_TRITON, 3.3: the first ASTSource taking `constexprs=`): the 3.3.1
# wheel goes into a side folder put first on PYTHONPATH, and tests/plugins/test_ptx.py runs against it.
# Cached under $EVIS_TRITON_FLOOR_CACHE. Run from .ci/run inside the activated CI venv.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR="3.3.1"
DIR="${EVIS_TRITON_FLOOR_CACHE:-${TMPDIR:-/tmp}/evis-triton-$FLOOR}"
if [ ! -f "$DIR/.complete" ]; then
    rm -rf "$DIR"
    python -m pip install -q --no-deps --target "$DIR" "triton==$FLOOR"
    touch "$DIR/.complete"
fi
PYTHONPATH="$DIR" python - <<PY
import triton
assert triton.__version__ == "$FLOOR", triton.__version__
PY
PYTHONPATH="$DIR" python -m pytest -q -p no:cacheprovider tests/plugins/test_ptx.py
