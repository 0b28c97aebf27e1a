"""benchmarks/bench_common.py: the benchmarks' cached bundles are reused, or exported again when this
toolkit can no longer open them (a cached bundle of an older schema once stopped the serving benchmark)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from efficientvis_trt.bundle import SCHEMA_VERSION, Bundle

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_cached_bundle_is_reused_and_an_old_schema_is_exported_again(make_tiny_bundle, tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_common import ensure_bundle
    finally:
        sys.path.remove(str(BENCHMARKS))

    shutil.copytree(make_tiny_bundle(), tmp_path / "tiny")
    said: list[str] = []
    created = Bundle.open(tmp_path / "tiny").metadata["created"]
    assert ensure_bundle("tiny", tmp_path, 2, said.append, precisions=()) == tmp_path / "tiny"
    assert said == [] and Bundle.open(tmp_path / "tiny").metadata["created"] == created

    meta_path = tmp_path / "tiny" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["schema_version"] = SCHEMA_VERSION - 1
    meta_path.write_text(json.dumps(meta))
    ensure_bundle("tiny", tmp_path, 2, said.append, precisions=())
    assert len(said) == 1 and said[0].startswith("[tiny] exporting") and "schema_version" in said[0]
    assert Bundle.open(tmp_path / "tiny").metadata["schema_version"] == SCHEMA_VERSION
