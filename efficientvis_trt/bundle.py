"""The model bundle: the folder every later step (precision builds, engines, runtime, benchmarks) reads.

This module owns every file name of a bundle and its metadata schema, and it is the only
writer: the exporter, `evis build` and the engine build hand it bytes through a
`Transaction` (docs/bundle.md, "Layout", "Metadata", "Transactions and locking").

Layout::

    BUNDLE/
      metadata.json          the commit record: format tag, config, I/O table, and every file
                             below with its role, size and sha256 (the one source of truth)
      model.onnx             fp32 per-clip graph (docs/contract.md, "I/O table")
      init_state.npz         clip-0 state: query [N, C], boxes [N, 4] float32
      model.fp16.onnx        `evis build --precision fp16`
      model.int8.onnx        `evis build --precision int8` (the Q/DQ graph TensorRT builds)
      model.int8.cpu.onnx    `evis build --precision int8` (the form ONNX Runtime's CPU provider runs)
      calibration.json       how each precision graph was built (clips, seed, ranges, what stayed fp32)
      engines/               TensorRT plans and their sidecars, named by the TensorRT layer
      .evis.lock             writers' lock (flock); no content
      .evis-commit.json      only between a commit point and its roll-forward (see Transaction)
      .evis-hashes.json      verification cache: sha256 per file + (size, mtime, ctime, inode)
      .evis-tmp-<pid>-*      a writer's temporaries; removed on its exit or the next writer's start

`Bundle.open` is cheap: it reads metadata.json, checks sizes, and checks each file's
sha256 against a cache keyed by the file's stat (so a file swapped in from another
bundle is refused, and a known file costs one stat). Graph I/O is checked with onnx
when a graph is written, never on open: the recorded hash proves it unchanged since.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.config import Config
from efficientvis_trt.contract import (
    BATCH_METADATA,
    PRECISIONS,
    check_clip_len,
    check_input_size,
    io_table,
    model_io_dims,
)
from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import (
    clean_stale_temporaries,
    file_mode,
    file_sha256,
    fsync_path,
    temp_prefix,
    write_bytes_atomic,
)

BUNDLE_FORMAT = "efficientvis-trt-bundle"
# 2: files carry roles; precisions come from metadata['files'] alone. 3: every graph is batched (a leading
# dynamic B on every input and output; metadata['batch'] says so; docs/contract.md, "Batched graph").
SCHEMA_VERSION = 3

METADATA_FILE = "metadata.json"
MODEL_FILE = "model.onnx"
STATE_FILE = "init_state.npz"
CALIBRATION_FILE = "calibration.json"
ENGINE_DIR = "engines"
ONNX_FILES = {"fp32": MODEL_FILE, "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
# ONNX Runtime CPU-provider forms (TensorRT and GPU providers use ONNX_FILES)
ORT_CPU_ONNX_FILES = {"int8": "model.int8.cpu.onnx"}
LOCK_FILE = ".evis.lock"
JOURNAL_FILE = ".evis-commit.json"
HASH_CACHE_FILE = ".evis-hashes.json"
OUR_CONTROL_FILES = (LOCK_FILE, JOURNAL_FILE, HASH_CACHE_FILE)

# Roles of the files listed in metadata['files'] (docs/bundle.md, "Metadata").
ROLES = ("graph", "state", "calibration", "engine", "engine-info", "timing-cache")
# Keys the toolkit reads back (validated on open); the exporter also writes provenance for
# people and deployment tools: created, versions, letterbox, preprocessing, clip_padding,
# onnx, verification, timing_s, notes.
REQUIRED_KEYS = ("format", "schema_version", "config", "class_names", "clip_len", "input_size", "io", "files", "batch")
_ONNX_DTYPES = {1: "float32", 2: "uint8", 10: "float16", 3: "int8", 6: "int32", 7: "int64"}
_hash_cache: dict[tuple[str, tuple[int, ...]], str] = {}  # (path, stat key) -> sha256, this process


# ---- small helpers -------------------------------------------------------------------------
def _stat_key(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _check_name(name: str) -> str:
    """A bundle file name: relative, at most one folder deep (engines/...), no temporaries or control files."""
    parts = Path(name).parts
    if (
        not parts
        or Path(name).is_absolute()
        or len(parts) > 2
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or name == METADATA_FILE
    ):
        raise EvisError(f"{name!r} is not a bundle file name")
    return name


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, file_mode())


def _read_metadata(path: Path) -> dict[str, Any]:
    meta_path = path / METADATA_FILE
    try:
        text = meta_path.read_text()
    except FileNotFoundError:
        raise EvisError(f"{meta_path} is missing: {path} is not a bundle (re-export with `evis export`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvisError(f"{meta_path} cannot be read ({exc})") from None
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvisError(f"{meta_path} is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != BUNDLE_FORMAT:
        raise EvisError(f"{meta_path} is not EfficientVIS-TRT bundle metadata (no format '{BUNDLE_FORMAT}')")
    return metadata


def is_our_bundle(path: str | os.PathLike) -> bool:
    """True when `path` holds metadata.json with our format tag (what `evis export --out` may replace)."""
    try:
        _read_metadata(Path(path))
    except EvisError:
        return False
    return True


# ---- locks ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    """Exclusive lock serialising writers of one bundle (flock on BUNDLE/.evis.lock; released on any exit)."""
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as exc:
        raise EvisError(f"cannot write to bundle {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def _commit_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """flock on the bundle folder itself: readers share it while they validate, a roll-forward holds it alone.

    Works on a read-only bundle too (a folder opens O_RDONLY), so readers never need write access.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


# ---- the commit journal ----------------------------------------------------------------------
def _roll_forward(path: Path) -> None:
    """Finish a committed transaction: rename its files in, write metadata.json, drop removed files.

    Every step is idempotent, so a crash here is repaired by running it again; the caller
    holds the writer lock and the exclusive commit lock.
    """
    journal_path = path / JOURNAL_FILE
    try:
        journal = json.loads(journal_path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):  # a torn journal never reached its rename: it is not committed
        journal_path.unlink(missing_ok=True)
        return
    for tmp, name in journal["renames"]:
        _check_name(name)
        if Path(tmp).name.startswith(".") is False or ".." in Path(tmp).parts:
            raise EvisError(f"{journal_path}: bad temporary name {tmp!r}")
        src = path / tmp
        if src.exists():
            (path / name).parent.mkdir(exist_ok=True)
            os.replace(src, path / name)
    write_bytes_atomic(path / METADATA_FILE, (json.dumps(journal["metadata"], indent=2) + "\n").encode())
    for name in journal["remove"]:
        target = path / _check_name(name)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
    fsync_path(path)
    cache = _load_hash_cache(path)
    for name, rec in journal["metadata"]["files"].items():
        with contextlib.suppress(OSError):
            cache[name] = [*_stat_key(path / name), rec["sha256"]]
    for name in journal["remove"]:
        cache.pop(name, None)
    _save_hash_cache(path, cache)
    journal_path.unlink()
    fsync_path(path)


def _load_hash_cache(path: Path) -> dict[str, list]:
    try:
        cache = json.loads((path / HASH_CACHE_FILE).read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_hash_cache(path: Path, cache: dict[str, list]) -> None:
    """Best effort: a read-only bundle simply re-hashes in every process."""
    with contextlib.suppress(OSError):
        write_bytes_atomic(path / HASH_CACHE_FILE, json.dumps(cache).encode())


def _finish_pending_commit(path: Path) -> None:
    """A crash after a commit point leaves a journal: whoever opens the bundle next rolls it forward."""
    if not (path / JOURNAL_FILE).exists():
        return
    try:
        with _writer_lock(path), _commit_lock(path, exclusive=True):
            _roll_forward(path)
    except (EvisError, PermissionError) as exc:
        raise EvisError(
            f"bundle {path} has an unfinished commit ({JOURNAL_FILE}) and cannot be finished here ({exc}); "
            "open it once with write access"
        ) from None


def check_metadata(metadata: dict[str, Any], path: Path) -> dict[str, Any]:
    """The schema checks every open (and every commit) runs; returns `metadata`."""
    meta_path = path / METADATA_FILE
    version = metadata.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EvisError(
            f"{meta_path} has schema_version {version!r}; this toolkit reads {SCHEMA_VERSION} "
            "(re-export the bundle with this toolkit)"
        )
    for key in REQUIRED_KEYS:
        if key not in metadata:
            raise EvisError(f"{meta_path} lacks '{key}'")
    try:
        check_input_size(metadata["input_size"], "input_size")
        check_clip_len(metadata["clip_len"], "clip_len")
    except EvisError as exc:
        raise EvisError(f"{meta_path}: {exc}") from None
    if not isinstance(metadata["class_names"], list):
        raise EvisError(f"{meta_path}: class_names must be a list")
    if metadata["batch"] != BATCH_METADATA:
        raise EvisError(f"{meta_path}: 'batch' is {metadata['batch']!r}, expected {BATCH_METADATA!r}")
    files = metadata["files"]
    if not isinstance(files, dict) or not all(
        isinstance(r, dict) and {"bytes", "sha256", "role"} <= set(r) for r in files.values()
    ):
        raise EvisError(f"{meta_path}: 'files' must map each file to its bytes, sha256 and role")
    for name in files:
        _check_name(name)
    return metadata


# ---- the bundle --------------------------------------------------------------------------------
class Bundle:
    """An exported model folder; see the module docstring for the layout."""

    def __init__(self, path: Path, metadata: dict[str, Any], staged: dict[str, Path] | None = None):
        self._path = Path(path)
        self._metadata = metadata
        self._staged = staged or {}  # name -> temp path, for a Transaction's preview
        try:
            self._config = Config.from_dict(metadata["config"])
        except EvisError as exc:
            raise EvisError(f"{self._path / METADATA_FILE}: bad config ({exc})") from None

    # ---- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> Bundle:
        """Open and validate a bundle; any missing, changed or inconsistent file is one EvisError naming it."""
        path = Path(path)
        if not path.is_dir():
            raise EvisError(f"bundle not found: {path} is not a folder (create one with `evis export`)")
        _finish_pending_commit(path)
        with _commit_lock(path, exclusive=False):
            bundle = cls(path, check_metadata(_read_metadata(path), path))
            bundle._validate()
        return bundle

    def _validate(self) -> None:
        meta_path = self._path / METADATA_FILE
        if len(self.class_names) != self.num_classes:
            raise EvisError(f"{meta_path}: {len(self.class_names)} class names for {self.num_classes} classes")
        expected = self._expected_io()
        got = self._metadata["io"]
        if not isinstance(got, list) or len(got) != len(expected):
            raise EvisError(f"{meta_path}: I/O table must list {len(expected)} tensors")
        for want, have in zip(expected, got):
            for key in ("name", "dir", "shape", "dtype"):
                if not isinstance(have, dict) or have.get(key) != want[key]:
                    raise EvisError(
                        f"{meta_path}: I/O table entry {want['name']!r} has {key} "
                        f"{have.get(key) if isinstance(have, dict) else have!r}, expected {want[key]!r}"
                    )
        for name in (MODEL_FILE, STATE_FILE):
            if name not in self.files:
                raise EvisError(f"{meta_path} does not list {name} (re-export with `evis export`)")
        cache = _load_hash_cache(self._path) if not self._staged else {}
        changed = False
        for name in self.files:
            changed |= self._verify(name, cache)
        if changed:
            _save_hash_cache(self._path, cache)
        self._check_state()

    def _verify(self, name: str, cache: dict[str, list]) -> bool:
        """Size, then sha256 (via the stat-keyed caches) of one listed file; True if the sidecar cache grew."""
        rec = self.files[name]
        f = self._file(name)
        shown = self._path / name
        try:
            key = _stat_key(f)
        except FileNotFoundError:
            raise EvisError(f"{shown} is missing (listed in {METADATA_FILE}; rebuild or re-export)") from None
        if key[0] != rec["bytes"]:
            raise EvisError(
                f"{shown} has {key[0]} bytes, {METADATA_FILE} says {rec['bytes']}: "
                "truncated or replaced (re-export or rebuild)"
            )
        sha = _hash_cache.get((str(f), key))
        grew = False
        if sha is None:
            entry = cache.get(name)
            if isinstance(entry, list) and len(entry) == 5 and tuple(entry[:4]) == key:
                sha = entry[4]
            else:
                sha = file_sha256(f)
                cache[name] = [*key, sha]
                grew = True
            _hash_cache[(str(f), key)] = sha
        if sha != rec["sha256"]:
            raise EvisError(
                f"{shown} is not the file {METADATA_FILE} records (sha256 differs; swapped in from another "
                "bundle?): rebuild or re-export"
            )
        return grew

    def _file(self, name: str) -> Path:
        return self._staged.get(name, self._path / name)

    def _expected_io(self) -> list[dict[str, Any]]:
        return io_table(model_io_dims(self._config.model, self.clip_len, self.input_hw))

    def _check_state(self) -> None:
        f = self._file(STATE_FILE)
        query, boxes = self._read_state(f)
        for name, arr, shape in (
            ("query", query, (self.num_queries, self.hidden_dim)),
            ("boxes", boxes, (self.num_queries, 4)),
        ):
            if arr.shape != shape or arr.dtype != np.float32:
                raise EvisError(f"{f}: '{name}' is {arr.dtype}{list(arr.shape)}, expected float32{list(shape)}")

    @staticmethod
    def _read_state(f: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(f, allow_pickle=False) as data:
                missing = [k for k in ("query", "boxes") if k not in data.files]
                if missing:
                    raise EvisError(f"{f} lacks key '{missing[0]}'")
                return data["query"], data["boxes"]
        except EvisError:
            raise
        except Exception as exc:  # zip/npy errors come in many types
            raise EvisError(f"{f} is not a readable .npz file ({type(exc).__name__})") from None

    # ---- properties ----------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """metadata['files']: name -> {bytes, sha256, role, ...}; every file of the bundle but metadata.json."""
        return self._metadata["files"]

    @property
    def config(self) -> Config:
        """The model's config (weights-compatible); the graph's T and H x W are `clip_len` / `input_hw`."""
        return self._config

    @property
    def class_names(self) -> list[str]:
        return list(self._metadata["class_names"])

    @property
    def clip_len(self) -> int:
        """T of the graph (may be below config.model.clip_len for a checkpoint exported with a shorter --clip-len)."""
        return int(self._metadata["clip_len"])

    @property
    def input_hw(self) -> tuple[int, int]:
        h, w = self._metadata["input_size"]
        return int(h), int(w)

    @property
    def num_queries(self) -> int:
        return self._config.model.num_queries

    @property
    def hidden_dim(self) -> int:
        return self._config.model.hidden_dim

    @property
    def num_classes(self) -> int:
        return self._config.model.num_classes

    @property
    def engine_dir(self) -> Path:
        return self._path / ENGINE_DIR

    # ---- content -------------------------------------------------------------------
    def init_state(self) -> tuple[np.ndarray, np.ndarray]:
        """The clip-0 state (query [N, C], boxes [N, 4]) as fresh float32 arrays."""
        query, boxes = self._read_state(self._file(STATE_FILE))
        return np.ascontiguousarray(query, np.float32), np.ascontiguousarray(boxes, np.float32)

    def file_path(self, name: str) -> Path:
        """A file the bundle lists, re-verified (size + sha256 via the stat cache) before it is handed out."""
        if name not in self.files:
            raise EvisError(f"{self._path / name} is not part of bundle {self._path}")
        self._verify(name, {})
        return self._file(name)

    def onnx_path(self, precision: str = "fp32") -> Path:
        """The ONNX graph for a precision; a missing one says how to build it."""
        if precision not in PRECISIONS:
            raise EvisError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        name = ONNX_FILES[precision]
        if name not in self.files:
            raise EvisError(
                f"{self._path / name} is missing: run `evis build {self._path} --precision {precision}` first"
            )
        return self.file_path(name)

    def cpu_graph(self, precision: str) -> tuple[Path, bool]:
        """(path, True): the CPU form of a precision (model.int8.cpu.onnx, docs/bundle.md); (default graph,
        False) where the precision has none or this bundle predates it, so each caller says so its own way."""
        default = self.onnx_path(precision)
        name = ORT_CPU_ONNX_FILES.get(precision)
        if name in self.files:
            return self.file_path(name), True
        return default, False

    def available_precisions(self) -> list[str]:
        """Precisions whose default graph the metadata lists (the files were verified on open)."""
        return [p for p in PRECISIONS if ONNX_FILES[p] in self.files]

    def read_json(self, name: str) -> dict[str, Any]:
        """A listed JSON file (e.g. calibration.json), verified; {} when the bundle has none."""
        if name not in self.files:
            return {}
        path = self.file_path(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EvisError(f"{path} is not readable JSON ({exc})") from None
        return data if isinstance(data, dict) else {}

    # ---- writing -------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Change this bundle: lock, re-read metadata, stage files, commit all at once (docs/bundle.md).

        The Transaction's `bundle` is the state as of the lock (another writer may have
        committed since this Bundle was opened); nothing is visible until the block ends
        without an exception. This Bundle is refreshed to the committed state.
        """
        with Transaction._begin(self._path, create=None) as tx:
            yield tx
        fresh = Bundle.open(self._path)
        self._metadata, self._config, self._staged = fresh._metadata, fresh._config, {}

    @classmethod
    @contextlib.contextmanager
    def create(cls, path: str | os.PathLike) -> Iterator[Transaction]:
        """Write a new bundle at `path`, or replace the one there (`evis export --out`).

        `path` must be absent, empty, hold only our own leftovers (a lock, temporaries), or
        be a bundle of ours (its format tag); anything else is refused before any work.
        Replacing drops every file the old metadata lists that the new one does not (its
        precision graphs and engines belong to the old weights); files that are not ours stay.
        """
        with Transaction._begin(Path(path), create=True) as tx:
            yield tx

    def __repr__(self) -> str:
        return (
            f"Bundle({str(self._path)!r}, T={self.clip_len}, hw={self.input_hw}, "
            f"precisions={self.available_precisions()})"
        )


def check_export_target(path: str | os.PathLike) -> Path:
    """`evis export --out` may write at `path`: one line otherwise, before any long work."""
    from efficientvis_trt.io_utils import check_writable_dir

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EvisError(f"--out {path} exists and is not a folder")
    if path.is_dir():
        if (path / METADATA_FILE).exists() and not is_our_bundle(path):
            raise EvisError(
                f"--out {path} holds a {METADATA_FILE} that is not an EfficientVIS-TRT bundle's "
                "(no format tag): refusing to replace it"
            )
        if not (path / METADATA_FILE).exists():
            foreign = [p.name for p in path.iterdir() if not _ours(p.name)]
            if foreign:
                raise EvisError(
                    f"--out {path} is a non-empty folder that is not a bundle ({foreign[0]!r} is not ours); "
                    "refusing to write into it"
                )
        check_writable_dir(path, "--out")
    else:
        check_writable_dir(path.parent if str(path.parent) else Path("."), "--out", creating=path.name)
    return path


def _ours(name: str) -> bool:
    from efficientvis_trt.io_utils import TEMP_TAG

    return name in OUR_CONTROL_FILES or name.startswith(TEMP_TAG)


class Transaction:
    """Staged changes to one bundle, committed all at once (see `Bundle.transaction` / `Bundle.create`).

    Commit protocol (docs/bundle.md, "Transactions and locking"): new files are written
    under temporary names (`.evis-tmp-<pid>-...`) beside their final place and fsynced;
    the new metadata is validated against the staged files; then one journal file
    (renames + new metadata) is renamed into place: that rename is the commit point.
    The roll-forward (renames, metadata.json, removals, journal deleted) follows under
    the exclusive commit lock; a crash before the commit point leaves the old bundle,
    after it the new one (the next open finishes the roll-forward).
    """

    def __init__(self, path: Path, metadata: dict[str, Any], replacing: bool):
        self.path = path
        self.metadata = metadata  # the new metadata; edit top-level keys freely, files via add/remove
        self._base_files: dict[str, dict] = dict(metadata.get("files", {}))
        self._staged: dict[str, Path] = {}
        self._removed: set[str] = set()
        self._replacing = replacing
        self._records: dict[str, dict[str, Any]] = {}
        self._temps: set[Path] = set()  # every temporary handed out, removed at the end unless renamed in
        self._token = secrets.token_hex(4)

    @classmethod
    @contextlib.contextmanager
    def _begin(cls, path: Path, create: bool | None) -> Iterator[Transaction]:
        made = False
        if create:
            check_export_target(path)
            if not path.exists():
                path.mkdir(parents=True)
                made = True
        elif not path.is_dir():
            raise EvisError(f"bundle not found: {path} is not a folder")
        try:
            with _writer_lock(path):
                with _commit_lock(path, exclusive=True):
                    _roll_forward(path)  # a crashed writer's commit comes first
                for folder in (path, path / ENGINE_DIR):
                    clean_stale_temporaries(folder)
                if create:
                    old = _read_metadata(path) if (path / METADATA_FILE).exists() else {"files": {}}
                    tx = cls(path, {"files": {}}, replacing=True)
                    tx._base_files = dict(old.get("files", {}))
                else:
                    tx = cls(path, copy.deepcopy(check_metadata(_read_metadata(path), path)), replacing=False)
                try:
                    yield tx
                    tx._commit()
                finally:
                    tx._discard()
        finally:
            if made and not (path / METADATA_FILE).exists():  # a new folder that never got a bundle goes again
                with contextlib.suppress(OSError):
                    for p in path.iterdir():
                        if _ours(p.name):
                            p.unlink()
                    path.rmdir()

    # ---- staging -------------------------------------------------------------------
    @property
    def bundle(self) -> Bundle:
        """The bundle as it will be after commit (staged files included), for reads and checks."""
        meta = {**self.metadata, "files": self._files()}
        return Bundle(self.path, meta, staged=dict(self._staged))

    def staging_path(self, name: str) -> Path:
        """A fresh temporary path for `name` (for tools that write files themselves, e.g. onnx.save)."""
        _check_name(name)
        folder = (self.path / name).parent
        folder.mkdir(exist_ok=True)
        tmp = folder / f"{temp_prefix(Path(name).name)}{self._token}"
        self._temps.add(tmp)
        return tmp

    def add_file(self, name: str, src: bytes | str | os.PathLike, role: str, **attrs: Any) -> Path:
        """Stage `name` (bytes, or a file: a `staging_path` is adopted, anything else copied). Returns its temp path.

        `role` is one of ROLES; `attrs` (JSON values) go into the file's metadata record.
        """
        if role not in ROLES:
            raise EvisError(f"unknown bundle file role {role!r}: use one of {', '.join(ROLES)}")
        tmp = self.staging_path(name)
        if isinstance(src, (bytes, bytearray, memoryview)):
            tmp.unlink(missing_ok=True)
            _fsync_write(tmp, bytes(src))
        else:
            src = Path(src)
            if src != tmp:
                tmp.unlink(missing_ok=True)
                shutil.copyfile(src, tmp)
            os.chmod(tmp, file_mode())
            fsync_path(tmp)
        json.dumps(attrs)  # fail now, not at commit
        self._staged[name] = tmp
        self._removed.discard(name)
        sha = file_sha256(tmp)
        _hash_cache[(str(tmp), _stat_key(tmp))] = sha
        self._records[name] = {"bytes": tmp.stat().st_size, "sha256": sha, "role": role, **attrs}
        return tmp

    def remove_file(self, name: str) -> None:
        """Drop a listed file at commit (a missing one is no error)."""
        self._staged.pop(name, None)
        self._records.pop(name, None)
        self._removed.add(name)

    def _files(self) -> dict[str, dict]:
        files = {} if self._replacing else dict(self._base_files)
        for name in self._removed:
            files.pop(name, None)
        files.update(self._records)
        return files

    # ---- commit --------------------------------------------------------------------
    def _commit(self) -> None:
        meta = {
            **self.metadata,
            "format": BUNDLE_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "batch": dict(BATCH_METADATA),
            "files": self._files(),
        }
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise EvisError(f"bundle metadata is not JSON-serialisable ({exc})") from None
        staged = dict(self._staged)
        check_metadata(meta, self.path)
        preview = Bundle(self.path, meta, staged=staged)
        preview._validate()
        for name, tmp in staged.items():  # a graph's I/O is parsed once, here, never on open
            if meta["files"][name]["role"] == "graph":
                check_onnx_io(tmp, preview._expected_io(), shown=self.path / name)
        removed = sorted((set(self._base_files) - set(meta["files"])) | (self._removed - set(meta["files"])))
        journal = {
            "renames": [[str(p.relative_to(self.path)), name] for name, p in staged.items()],
            "remove": removed,
            "metadata": meta,
        }
        journal_tmp = self.path / f"{temp_prefix(JOURNAL_FILE)}{self._token}"
        _fsync_write(journal_tmp, json.dumps(journal).encode())
        with _commit_lock(self.path, exclusive=True):
            os.replace(journal_tmp, self.path / JOURNAL_FILE)  # the commit point
            fsync_path(self.path)
            _roll_forward(self.path)
        self.metadata = meta

    def _discard(self) -> None:
        if (self.path / JOURNAL_FILE).exists():  # interrupted after our commit point: finish it, keep its files
            with _commit_lock(self.path, exclusive=True):
                _roll_forward(self.path)
        for tmp in self._temps:  # after a commit they were renamed in: nothing left to remove
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._temps, self._staged = set(), {}
        with contextlib.suppress(OSError):
            (self.path / f"{temp_prefix(JOURNAL_FILE)}{self._token}").unlink()


# ---- graph I/O ---------------------------------------------------------------------------------
def read_onnx_io(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Graph inputs/outputs (name, dir, shape, dtype) of an ONNX file (onnx.load, external data not loaded)."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise EvisError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    rows: list[dict[str, Any]] = []
    for direction, values in (("in", model.graph.input), ("out", model.graph.output)):
        for vi in values:
            tt = vi.type.tensor_type
            rows.append(
                {
                    "name": vi.name,
                    "dir": direction,
                    "shape": [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim],
                    "dtype": _ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)),
                }
            )
    return rows


def check_onnx_io(
    path: str | os.PathLike, expected: list[dict[str, Any]], shown: str | os.PathLike | None = None
) -> None:
    """The graph's I/O must be exactly the I/O table (names, order, static shapes, dtypes).

    `shown`: the name to report (a staged temporary is reported under its final name).
    """
    got = read_onnx_io(path)
    path = shown or path
    if not got:
        raise EvisError(f"{path} is not an ONNX model (no graph inputs/outputs found)")
    for direction in ("in", "out"):
        want = [(r["name"], list(r["shape"]), r["dtype"]) for r in expected if r["dir"] == direction]
        have = [(r["name"], r["shape"], r["dtype"]) for r in got if r["dir"] == direction]
        if want != have:
            first = next(((w, h) for w, h in zip(want, have) if w != h), (want, have))
            raise EvisError(
                f"{path}: graph {direction}puts do not match the bundle's I/O table "
                f"(expected {first[0]}, found {first[1]})"
            )
