"""The bundle as the only writer: export --out safety, transactions, hash verification, metadata checks."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL_BUNDLE, export_small_bundle, our_temporaries

from efficientvis_trt.bundle import Bundle, Transaction
from efficientvis_trt.errors import EvisError


@pytest.fixture(scope="module")
def small_bundle(make_tiny_bundle) -> Path:
    return make_tiny_bundle(**SMALL_BUNDLE)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_export_refuses_a_folder_whose_metadata_is_not_ours(tmp_path):
    """`metadata.json` alone does not make a folder ours: nothing in it is deleted or replaced."""
    target = tmp_path / "P"
    target.mkdir()
    (target / "metadata.json").write_text('{"name": "x"}')
    (target / "thesis.txt").write_text("keep")
    with pytest.raises(EvisError, match="not an EfficientVIS-TRT bundle's .*refusing"):
        export_small_bundle(target)
    assert sorted(p.name for p in target.iterdir()) == ["metadata.json", "thesis.txt"]
    assert (target / "thesis.txt").read_text() == "keep"


def test_export_refuses_a_non_empty_folder(tmp_path):
    target = tmp_path / "P"
    target.mkdir()
    (target / "notes.md").write_text("mine")
    with pytest.raises(EvisError, match="'notes.md' is not ours"):
        export_small_bundle(target)
    assert [p.name for p in target.iterdir()] == ["notes.md"]


def test_reexport_keeps_foreign_files_and_drops_the_old_precisions(small_bundle, tmp_path):
    b = _copy(small_bundle, tmp_path / "b")
    (b / "thesis.txt").write_text("keep")
    with Bundle.open(b).transaction() as tx:  # an fp16 graph of the old weights
        tx.add_file("model.fp16.onnx", b / "model.onnx", role="graph", precision="fp16")
    assert Bundle.open(b).available_precisions() == ["fp32", "fp16"]
    export_small_bundle(b)
    again = Bundle.open(b)
    assert again.available_precisions() == ["fp32"] and not (b / "model.fp16.onnx").exists()
    assert (b / "thesis.txt").read_text() == "keep" and our_temporaries(b) == []


def test_export_out_checked_before_work(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad, message in ((tmp_path / "file", "not a folder"), (tmp_path / "file" / "b", "is a file, not a folder")):
        with pytest.raises(EvisError, match=message) as err:
            export_small_bundle(bad)
        assert "\n" not in str(err.value)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not _can_write(ro):  # root ignores permission bits
            with pytest.raises(EvisError, match="cannot write in"):
                export_small_bundle(ro / "b")
    finally:
        ro.chmod(0o700)


def _can_write(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_swapped_file_of_same_size_is_refused(small_bundle, tmp_path):
    b = _copy(small_bundle, tmp_path / "b")
    Bundle.open(b)  # fills the verification cache
    state = np.load(b / "init_state.npz")
    np.savez(b / "init_state.npz", query=state["query"] + 1, boxes=state["boxes"])
    assert (b / "init_state.npz").stat().st_size == (small_bundle / "init_state.npz").stat().st_size
    with pytest.raises(EvisError, match="init_state.npz is not the file metadata.json records"):
        Bundle.open(b)


def test_open_is_cheap_once_cached(small_bundle, monkeypatch):
    import efficientvis_trt.bundle as bundle_module

    Bundle.open(small_bundle)
    monkeypatch.setattr(bundle_module, "_hash_cache", {})  # a fresh process: only the sidecar remains
    calls = []
    monkeypatch.setattr(bundle_module, "file_sha256", lambda p: calls.append(p) or "x")
    Bundle.open(small_bundle)
    assert calls == []  # every file verified from the stat-keyed sidecar, none re-hashed


def test_failed_transaction_leaves_the_old_bundle_and_no_temporaries(small_bundle, tmp_path):
    b = _copy(small_bundle, tmp_path / "b")
    before = json.loads((b / "metadata.json").read_text())
    with pytest.raises(RuntimeError, match="boom"), Bundle.open(b).transaction() as tx:
        tx.add_file("calibration.json", b"{}", role="calibration")
        raise RuntimeError("boom")
    assert json.loads((b / "metadata.json").read_text()) == before
    assert not (b / "calibration.json").exists() and our_temporaries(b) == []
    with pytest.raises(EvisError, match="not a bundle file name"), Bundle.open(b).transaction() as tx:
        tx.add_file("../escape.txt", b"x", role="calibration")
    with pytest.raises(EvisError, match="unknown bundle file role"), Bundle.open(b).transaction() as tx:
        tx.add_file("x.json", b"x", role="weights")


def test_transactions_serialise_and_reread_metadata(small_bundle, tmp_path):
    """Two writers at once: each re-reads metadata under the lock, so neither update is lost."""
    b = _copy(small_bundle, tmp_path / "b")
    first, second = Bundle.open(b), Bundle.open(b)  # both opened before either writes
    inside = threading.Event()
    release = threading.Event()

    def slow_writer():
        with first.transaction() as tx:
            tx.add_file("engines/a.json", b"{}", role="engine-info")
            inside.set()
            release.wait(10)

    t = threading.Thread(target=slow_writer)
    t.start()
    assert inside.wait(10)
    done = threading.Event()

    def fast_writer():
        with second.transaction() as tx:
            tx.add_file("engines/b.json", b"{}", role="engine-info")
        done.set()

    t2 = threading.Thread(target=fast_writer)
    t2.start()
    assert not done.wait(0.5)  # blocked on the lock while the first writer holds it
    release.set()
    t.join(10)
    t2.join(10)
    files = Bundle.open(b).files
    assert {"engines/a.json", "engines/b.json"} <= set(files) and our_temporaries(b) == []


def test_unfinished_commit_is_rolled_forward_on_open(small_bundle, tmp_path, monkeypatch):
    """A crash right after the commit point: the journal is there, the renames are not; open finishes them."""
    import efficientvis_trt.bundle as bundle_module

    b = _copy(small_bundle, tmp_path / "b")
    monkeypatch.setattr(bundle_module, "_roll_forward", lambda path: None)
    monkeypatch.setattr(Transaction, "_discard", lambda self: None)  # as if killed: nothing ran on the way out
    with Bundle.open(b).transaction() as tx:
        tx.add_file("calibration.json", b'{"schema_version": 1}', role="calibration")
    assert (b / ".evis-commit.json").exists() and not (b / "calibration.json").exists()
    monkeypatch.undo()
    assert Bundle.open(b).read_json("calibration.json") == {"schema_version": 1}
    assert our_temporaries(b) == []


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("input_size", [64], "input_size must be \\[H, W\\]"),
        ("input_size", "64x96", "input_size must be \\[H, W\\]"),
        ("input_size", [64, 100], "multiples of 32"),
        ("input_size", [64, 4096], "limit of 2048"),
        ("clip_len", 0, "clip_len 0 must be at least 2"),
        ("clip_len", 100000, "limit of 64"),
        ("files", {"../x": {"bytes": 1, "sha256": "", "role": "graph"}}, "not a bundle file name"),
    ],
)
def test_malformed_metadata_is_one_line(small_bundle, tmp_path, field, value, message):
    b = _copy(small_bundle, tmp_path / "b")
    meta = json.loads((b / "metadata.json").read_text())
    meta[field] = value
    (b / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(EvisError, match=message) as err:
        Bundle.open(b)
    assert "\n" not in str(err.value)


def test_metadata_has_one_source_of_truth(small_bundle):
    meta = json.loads((small_bundle / "metadata.json").read_text())
    assert not {"precisions", "ort_cpu_graphs", "engines", "init_state"} & set(meta)
    assert {n: r["role"] for n, r in meta["files"].items()} == {"init_state.npz": "state", "model.onnx": "graph"}
