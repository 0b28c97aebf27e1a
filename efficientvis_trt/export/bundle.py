"""The model bundle: the folder every later step (calibration, runtime, benchmarks) reads.

Layout (docs/bundle.md, "Layout")::

    BUNDLE/
      model.onnx            fp32 per-clip graph (docs/contract.md)
      model.fp16.onnx       written by `evis build --precision fp16`
      model.int8.onnx       written by `evis build --precision int8`
      init_state.npz        clip-0 state: query [N, C], boxes [N, 4] float32
      metadata.json         schema-versioned description (config, I/O table, letterbox, versions, ...)
      engines/              TensorRT plans, named by precision + GPU + TensorRT version

`Bundle.open` validates cheaply (no ONNX parse: the graph's I/O is read straight from
the protobuf wire format, skipping the weights) so every command can afford it, and a
wrong or missing file is one error naming that file.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.config import Config
from efficientvis_trt.contract import PRECISIONS, io_table, model_io_dims
from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import write_json_atomic

BUNDLE_FORMAT = "efficientvis-trt-bundle"
SCHEMA_VERSION = 2  # 2: every graph is batched (a leading dynamic B; docs/contract.md, "Batched graph")
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
MODEL_FILE = ONNX_FILES["fp32"]
# ONNX Runtime CPU-provider forms (written by `evis build`; TensorRT and GPU providers use ONNX_FILES)
ORT_CPU_ONNX_FILES = {"int8": "model.int8.cpu.onnx"}
ONNX_TARGETS = ("default", "ort-cpu")
STATE_FILE = "init_state.npz"
METADATA_FILE = "metadata.json"
ENGINE_DIR = "engines"

_ONNX_DTYPES = {1: "float32", 2: "uint8", 10: "float16", 3: "int8", 6: "int32", 7: "int64"}


class Bundle:
    """An exported model folder; see the module docstring for the layout."""

    def __init__(self, path: Path, metadata: dict[str, Any]):
        self._path = Path(path)
        self._metadata = metadata
        self._config = Config.from_dict(metadata["config"])

    # ---- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> Bundle:
        """Open and validate a bundle; any missing or inconsistent file is one EvisError naming it."""
        path = Path(path)
        if not path.is_dir():
            raise EvisError(f"bundle not found: {path} is not a folder (create one with `evis export`)")
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise EvisError(f"{meta_path} is missing: {path} is not a bundle (re-export with `evis export`)")
        try:
            metadata = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EvisError(f"{meta_path} is not valid JSON ({exc})") from None
        if not isinstance(metadata, dict) or metadata.get("format") != BUNDLE_FORMAT:
            raise EvisError(f"{meta_path} is not EfficientVIS-TRT bundle metadata (no format '{BUNDLE_FORMAT}')")
        version = metadata.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EvisError(
                f"{meta_path} has schema_version {version!r}; this toolkit reads {SCHEMA_VERSION} "
                "(re-export the bundle with this toolkit)"
            )
        for key in ("config", "class_names", "clip_len", "input_size", "io"):
            if key not in metadata:
                raise EvisError(f"{meta_path} lacks '{key}'")
        try:
            bundle = cls(path, metadata)
        except EvisError as exc:
            raise EvisError(f"{meta_path}: bad config ({exc})") from None
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
        for name, info in self._metadata.get("files", {}).items():
            f = self._path / name
            if not f.is_file():
                raise EvisError(f"{f} is missing (listed in {METADATA_FILE})")
            if f.stat().st_size != info.get("bytes"):
                raise EvisError(
                    f"{f} has {f.stat().st_size} bytes, {METADATA_FILE} says {info.get('bytes')}: "
                    "truncated or replaced (re-export or rebuild)"
                )
        self._check_state()
        model = self._path / MODEL_FILE
        if not model.is_file():
            raise EvisError(f"{model} is missing (re-export with `evis export`)")
        check_onnx_io(model, expected)

    def _expected_io(self) -> list[dict[str, Any]]:
        return io_table(model_io_dims(self._config.model, self.clip_len, self.input_hw))

    def _check_state(self) -> None:
        f = self._path / STATE_FILE
        if not f.is_file():
            raise EvisError(f"{f} is missing (re-export with `evis export`)")
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
        query, boxes = self._read_state(self._path / STATE_FILE)
        return np.ascontiguousarray(query, np.float32), np.ascontiguousarray(boxes, np.float32)

    def onnx_path(self, precision: str = "fp32", target: str = "default") -> Path:
        """The ONNX graph for a precision; a missing one says how to build it.

        target "ort-cpu": the CPU-provider form (model.int8.cpu.onnx) when the bundle has one,
        else the default graph (older bundles); compare the returned name to tell which.
        """
        if precision not in PRECISIONS:
            raise EvisError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if target not in ONNX_TARGETS:
            raise EvisError(f"unknown ONNX target {target!r}: use one of {', '.join(ONNX_TARGETS)}")
        if target == "ort-cpu" and precision in ORT_CPU_ONNX_FILES:
            cpu = self._path / ORT_CPU_ONNX_FILES[precision]
            if cpu.is_file():
                check_onnx_io(cpu, self._expected_io())
                return cpu
        path = self._path / ONNX_FILES[precision]
        if not path.is_file():
            raise EvisError(f"{path} is missing: run `evis build {self._path} --precision {precision}` first")
        if precision != "fp32":  # I/O names, shapes and types stay the same at every precision (docs/contract.md)
            check_onnx_io(path, self._expected_io())
        return path

    def available_precisions(self) -> list[str]:
        return [p for p in PRECISIONS if (self._path / ONNX_FILES[p]).is_file()]

    def update_metadata(self, **fields: Any) -> None:
        """Set top-level metadata fields and rewrite metadata.json atomically (e.g. calibration, engines)."""
        protected = {"format", "schema_version"} & set(fields)
        if protected:
            raise EvisError(f"metadata field(s) {', '.join(sorted(protected))} cannot be changed")
        new = {**self._metadata, **fields}
        json.dumps(new)  # fail before writing if not JSON-serialisable
        meta_path = self._path / METADATA_FILE
        write_json_atomic(meta_path, new)
        self._metadata = new
        if "config" in fields:
            self._config = Config.from_dict(new["config"])

    def record_file(self, name: str) -> None:
        """Record a file's size and sha256 in metadata['files'] so `open` notices a truncated/replaced copy."""
        from efficientvis_trt.io_utils import file_sha256

        f = self._path / name
        if not f.is_file():
            raise EvisError(f"{f} is missing")
        files = dict(self._metadata.get("files", {}))
        files[name] = {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
        self.update_metadata(files=files)

    def __repr__(self) -> str:
        return (
            f"Bundle({str(self._path)!r}, T={self.clip_len}, hw={self.input_hw}, "
            f"precisions={self.available_precisions()})"
        )


# ---- reading graph I/O without parsing the weights ------------------------------------
def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """Yield (field number, wire type, value start, value end) of a protobuf message in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            _, nxt = _varint(buf, pos)
        elif wire == 1:
            nxt = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            nxt = pos + length
        elif wire == 5:
            nxt = pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if nxt > end:
            raise ValueError("truncated message")
        yield num, wire, pos, nxt
        pos = nxt


def read_onnx_io(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Graph inputs/outputs (name, dir, shape, dtype) of an ONNX file, skipping initializers (fast on big models)."""
    import onnx

    path = Path(path)
    rows: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for num, wire, s, e in _fields(buf, 0, len(buf)):
                if num != 7 or wire != 2:  # ModelProto.graph
                    continue
                for gnum, gwire, gs, ge in _fields(buf, s, e):
                    if gnum in (11, 12) and gwire == 2:  # GraphProto.input / output
                        vi = onnx.ValueInfoProto.FromString(bytes(buf[gs:ge]))
                        tt = vi.type.tensor_type
                        rows.append(
                            {
                                "name": vi.name,
                                "dir": "in" if gnum == 11 else "out",
                                "shape": [
                                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                    for d in tt.shape.dim
                                ],
                                "dtype": _ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)),
                            }
                        )
    except (ValueError, IndexError, OSError) as exc:
        raise EvisError(f"{path} is not a readable ONNX file ({exc})") from None
    except Exception as exc:  # protobuf DecodeError
        raise EvisError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    return rows


def check_onnx_io(path: str | os.PathLike, expected: list[dict[str, Any]]) -> None:
    """The graph's I/O must be exactly the I/O table (names, order, static shapes, dtypes)."""
    got = read_onnx_io(path)
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
