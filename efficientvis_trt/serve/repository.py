"""`evis serve BUNDLE --repo DIR`: a Triton Inference Server model repository for a bundle.

Why the configs are built as protobuf messages: Triton reads `config.pbtxt` as the text
form of its ModelConfig message, and tritonclient ships that message's generated code
(`tritonclient.grpc.model_config_pb2`). Building a `ModelConfig` and printing it with
`google.protobuf.text_format` means a misspelt field or a wrong enum fails here, not
when a production server loads the repository; tests parse every file back.

What is written (docs/serving.md, "The repository"):

    DIR/
      evis_repository.json          what was served from which bundle (Triton ignores files here)
      evis_python/                  python backend: ONNX Runtime inside Triton (any machine)
        config.pbtxt  1/model.py  1/model.onnx
      evis_onnxruntime/             platform onnxruntime_onnx (CPU or GPU instances)
        config.pbtxt  1/model.onnx
      evis_tensorrt/                platform tensorrt_plan (GPU): only when the bundle has an engine
        config.pbtxt  1/model.plan
      evis_*_stateful/              --server-state: sequence batcher with implicit state

Every model has the tracklet state as ordinary inputs/outputs (query_in/boxes_in ->
query_out/boxes_out): the client holds each stream's state, so requests of different
streams batch like any other requests and a restarted server loses nothing. The model
config's `parameters` carry what a client needs to run a video without the bundle
(clip length, canvas, classes, clip-0 state) and the bundle's weights fingerprint.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.contract import STATE_PAIRS
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.extras import install_command

REPOSITORY_FORMAT = "efficientvis-trt-triton-repository"
REPOSITORY_VERSION = 1
MARKER_FILE = "evis_repository.json"
MODEL_NAMES = {"python": "evis_python", "onnxruntime": "evis_onnxruntime", "tensorrt": "evis_tensorrt"}
STATEFUL_SUFFIX = "_stateful"
BACKENDS = tuple(MODEL_NAMES)
# A client that is not told which model to use takes the first of these that the server has ready.
MODEL_PREFERENCE = (MODEL_NAMES["tensorrt"], MODEL_NAMES["onnxruntime"], MODEL_NAMES["python"])
STATE_TENSORS = frozenset(n for pair in STATE_PAIRS for n in pair)
STATE_FILES = {"query_in": "init_query", "boxes_in": "init_boxes"}  # initial_state/ of a --server-state model
# Request parameter a client sets to the bundle fingerprint of the state it sends (checked by evis_python).
FINGERPRINT_PARAMETER = "evis_fingerprint"
_TRITON_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}
INSTALL_HINT = f"tritonclient is not installed: `{install_command('serve')}` in this repository"


def model_config_pb2():
    """Triton's ModelConfig protobuf module (from tritonclient), or BackendUnavailable saying how to install it."""
    try:
        from tritonclient.grpc import model_config_pb2 as mc
    except (ImportError, RuntimeError):  # RuntimeError: tritonclient without its grpc extra
        raise BackendUnavailable(INSTALL_HINT) from None
    return mc


# ---- what a client needs to know, carried in every model config's parameters ------------------------


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, "<f4").tobytes()).decode("ascii")


def _unb64(text: str, shape: tuple[int, ...]) -> np.ndarray:
    data = np.frombuffer(base64.b64decode(text), "<f4")
    if data.size != int(np.prod(shape)):
        raise EvisError(f"the served clip-0 state has {data.size} values, the model's dims say {list(shape)}")
    return data.reshape(shape).astype(np.float32)


@dataclass
class ServedContract:
    """The per-clip contract as one served model states it (docs/serving.md, "Model parameters")."""

    fingerprint: str  # the bundle's weights_sha256: a state is only meaningful for these weights
    precision: str
    clip_len: int
    input_hw: tuple[int, int]
    class_names: list[str]
    init_query: np.ndarray  # [N, C]
    init_boxes: np.ndarray  # [N, 4]
    tensors: list[dict[str, Any]] = field(default_factory=list)  # name, dir, dims (no batch dim), dtype

    def parameters(self) -> dict[str, str]:
        return {
            "evis_format": f"{REPOSITORY_FORMAT}/{REPOSITORY_VERSION}",
            FINGERPRINT_PARAMETER: self.fingerprint,
            "evis_precision": self.precision,
            "evis_clip_len": str(self.clip_len),
            "evis_input_size": f"{self.input_hw[0]}x{self.input_hw[1]}",
            "evis_class_names": json.dumps(self.class_names),
            "evis_init_query": _b64(self.init_query),
            "evis_init_boxes": _b64(self.init_boxes),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str) -> ServedContract:
        """From a model config as the server returns it (JSON form: parameters -> {key: {string_value}})."""
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        want = f"{REPOSITORY_FORMAT}/{REPOSITORY_VERSION}"
        if params.get("evis_format") != want:
            raise EvisError(
                f"{where} was not written by `evis serve` (parameter evis_format is "
                f"{params.get('evis_format')!r}, expected {want!r})"
            )
        dims = {t["name"]: tuple(int(d) for d in t.get("dims", ())) for t in config.get("input", [])}
        dims.update({t["name"]: tuple(int(d) for d in t.get("dims", ())) for t in config.get("output", [])})
        h, w = (int(x) for x in params["evis_input_size"].split("x"))
        q_shape, b_shape = dims.get("query_in"), dims.get("boxes_in")
        if q_shape is None or b_shape is None:
            raise EvisError(f"{where} has no query_in/boxes_in inputs (a --server-state model: not for this client)")
        return cls(
            fingerprint=params[FINGERPRINT_PARAMETER],
            precision=params["evis_precision"],
            clip_len=int(params["evis_clip_len"]),
            input_hw=(h, w),
            class_names=list(json.loads(params["evis_class_names"])),
            init_query=_unb64(params["evis_init_query"], q_shape),
            init_boxes=_unb64(params["evis_init_boxes"], b_shape),
        )


def _check_batched(graph: Path) -> None:
    """Triton's max_batch_size > 0 needs the stream dimension B first on every tensor (docs/contract.md)."""
    from efficientvis_trt.bundle import read_onnx_io
    from efficientvis_trt.contract import BATCH_DIM

    rows = read_onnx_io(graph)
    flat = [r["name"] for r in rows if not r["shape"] or r["shape"][0] not in (BATCH_DIM, None)]
    if flat:
        raise EvisError(
            f"{graph}: {', '.join(flat)} have no leading stream dimension {BATCH_DIM}: re-export the bundle "
            "with this toolkit (`evis export`) for the batched graph that Triton's batching needs"
        )


def contract_of(bundle, precision: str, graph: Path) -> ServedContract:
    """The served contract of a bundle (the per-clip I/O table without its stream dimension)."""
    _check_batched(graph)
    tensors = []
    for row in bundle.metadata["io"]:
        dims = list(row["shape"])
        if dims and not isinstance(dims[0], int):
            dims = dims[1:]  # the stream dimension B: Triton states its own batch dimension
        if not all(isinstance(d, int) for d in dims):
            raise EvisError(f"{bundle.path}: I/O table entry {row['name']!r} has symbolic dims {row['shape']}")
        tensors.append({"name": row["name"], "dir": row["dir"], "dims": dims, "dtype": row["dtype"]})
    query, boxes = bundle.init_state()
    fingerprint = bundle.metadata.get("weights_sha256")
    if not fingerprint:
        raise EvisError(f"{bundle.path}/metadata.json has no weights_sha256 (re-export the bundle with `evis export`)")
    return ServedContract(
        fingerprint=fingerprint,
        precision=precision,
        clip_len=bundle.clip_len,
        input_hw=tuple(bundle.input_hw),
        class_names=bundle.class_names,
        init_query=query,
        init_boxes=boxes,
        tensors=tensors,
    )


# ---- configs ---------------------------------------------------------------------------------------


def _base_config(name: str, contract: ServedContract, max_batch_size: int, stateful: bool = False):
    mc = model_config_pb2()
    cfg = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    for t in contract.tensors:
        if stateful and t["name"] in STATE_TENSORS:
            continue  # implicit state: Triton feeds query_in/boxes_in from the previous request's outputs
        entry = cfg.input.add() if t["dir"] == "in" else cfg.output.add()
        entry.name = t["name"]
        entry.data_type = getattr(mc, _TRITON_TYPES[t["dtype"]])
        entry.dims.extend(t["dims"])  # without the stream dimension: Triton's batch dimension is implicit
    for key, value in contract.parameters().items():
        cfg.parameters[key].string_value = value
    return cfg


def _add_dynamic_batching(cfg, queue_delay_us: int) -> None:
    cfg.dynamic_batching.max_queue_delay_microseconds = int(queue_delay_us)


def _add_instances(cfg, kind: str, count: int) -> None:
    mc = model_config_pb2()
    group = cfg.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_GPU if kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    group.count = int(count)


def _make_stateful(cfg, contract: ServedContract, queue_delay_us: int) -> None:
    """Sequence batcher with implicit state: the server keeps each sequence's query/boxes.

    The clip-0 state comes from raw float32 files in the model's initial_state/ folder.
    """
    mc = model_config_pb2()
    seq = cfg.sequence_batching
    seq.max_sequence_idle_microseconds = 60_000_000
    seq.oldest.max_candidate_sequences = cfg.max_batch_size
    seq.oldest.max_queue_delay_microseconds = int(queue_delay_us)
    dims = {t["name"]: t["dims"] for t in contract.tensors}
    for out, inp in STATE_PAIRS:
        file = STATE_FILES[inp]
        state = seq.state.add()
        state.input_name, state.output_name = inp, out
        state.data_type = mc.TYPE_FP32
        state.dims.extend(dims[inp])
        state.initial_state.add(data_type=mc.TYPE_FP32, dims=dims[inp], data_file=file, name=f"clip-0 {inp}")


def config_text(cfg) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(cfg)


def read_config(path: str | os.PathLike):
    """Parse a config.pbtxt with Triton's schema (a field or enum Triton does not know fails here)."""
    from google.protobuf import text_format

    mc = model_config_pb2()
    try:
        return text_format.Parse(Path(path).read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise EvisError(f"{path} is not a valid Triton model config: {exc}") from None


# ---- writing ---------------------------------------------------------------------------------------


@dataclass
class RepositoryReport:
    path: Path
    models: dict[str, str] = field(default_factory=dict)  # model name -> one line about it
    notes: list[str] = field(default_factory=list)  # models not written, and why


def _place(src: Path, dst: Path) -> None:
    """Hard-link a graph or plan into the repository (same file system), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_model(root: Path, cfg, files: dict[str, Path], extra: dict[str, bytes] | None = None) -> None:
    model_dir = root / cfg.name
    (model_dir / "1").mkdir(parents=True)
    for name, src in files.items():
        _place(src, model_dir / "1" / name)
    for rel, data in (extra or {}).items():
        (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / rel).write_bytes(data)
    (model_dir / "config.pbtxt").write_text(config_text(cfg))


def _state_files(contract: ServedContract) -> dict[str, bytes]:
    init = {"query_in": contract.init_query, "boxes_in": contract.init_boxes}
    return {f"initial_state/{file}": np.ascontiguousarray(init[n], "<f4").tobytes() for n, file in STATE_FILES.items()}


def _plugin_mode(engine_meta: dict) -> str | None:
    """The RoIAlign path inside an engine (its sidecar's plugin_path: in_engine, else selected): aot|jit|builtin."""
    path = engine_meta.get("plugin_path")
    if not isinstance(path, dict):
        return path
    found = path.get("in_engine")
    return found if found and found != "unknown" else path.get("selected", path.get("mode"))


def _engine_batch(rows: list[dict]) -> int | None:
    """The largest stream count every chosen engine's optimization profile accepts (None: a static engine)."""
    maxes = []
    for r in rows:
        profile = r.get("batch_profile")
        if not isinstance(profile, dict):
            return None
        maxes.append(int(profile.get("max", 1)))
    return min(maxes) if maxes else None


def _pick_engines(bundle, precision: str, engine: str | None) -> tuple[dict[str, Path], list[dict], str]:
    """({compute capability: plan}, their sidecars, '') or ({}, [], why not); JIT-plugin engines cannot load."""
    from efficientvis_trt.trt.engine import list_engines

    build = (
        f"build one on the serving GPU, with the TensorRT of the Triton container, with "
        f"`evis build {bundle.path} --precision {precision} --backend trt`, then rerun `evis serve`"
    )
    rows = list_engines(bundle, precision)
    if engine is not None:
        path = Path(engine)
        if not path.is_file():
            raise EvisError(f"--engine {path}: no such file")
        rows = [r for r in rows if Path(r["path"]).resolve() == path.resolve()] or [{"path": str(path)}]
    if not rows:
        return {}, [], f"no {precision} TensorRT engine in {bundle.engine_dir}: {build}"
    usable = [r for r in rows if _plugin_mode(r) != "jit"]
    if not usable:
        return (
            {},
            [],
            (
                f"the {precision} engine(s) in {bundle.engine_dir} use the JIT RoIAlign plugin, which runs Python "
                f"inside TensorRT and cannot load in Triton's TensorRT backend: {build} "
                "on TensorRT >= 10.9 (AOT plugin)"
            ),
        )
    by_cc: dict[str, Path] = {}
    for r in usable:
        cc = str(r.get("compute_capability", "default"))
        if cc in by_cc:
            raise EvisError(
                f"several {precision} engines for compute capability {cc} in {bundle.engine_dir}: "
                "choose one with --engine PLAN"
            )
        by_cc[cc] = Path(r["path"])
    return by_cc, usable, ""


def write_repository(
    bundle_path: str | os.PathLike,
    repo: str | os.PathLike,
    *,
    precision: str = "fp32",
    backends: tuple[str, ...] = BACKENDS,
    max_batch_size: int = 8,
    onnx_device: str = "cpu",
    instances: int = 1,
    queue_delay_us: int = 2000,
    engine: str | None = None,
    server_state: bool = False,
    threads: int = 0,
) -> RepositoryReport:
    """Write (or replace, whole) the Triton model repository `repo` for one precision of a bundle."""
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.io_utils import atomic_dir

    model_config_pb2()  # fail before anything else when tritonclient is missing
    if max_batch_size < 1:
        raise EvisError(f"--max-batch must be >= 1, got {max_batch_size}")
    if instances < 1:
        raise EvisError(f"--instances must be >= 1, got {instances}")
    if onnx_device not in ("cpu", "gpu"):
        raise EvisError(f"--onnx-device must be cpu or gpu, got {onnx_device!r}")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise EvisError(f"unknown --models {unknown or backends}: choose from {', '.join(BACKENDS)}")
    repo = Path(repo)
    if repo.exists() and (not repo.is_dir() or (any(repo.iterdir()) and not (repo / MARKER_FILE).is_file())):
        raise EvisError(f"--repo {repo} exists and is not a repository written by `evis serve`: give a new folder")
    bundle = Bundle.open(bundle_path)
    cpu_graph, _ = bundle.cpu_graph(precision)  # says how to build a missing precision
    contract = contract_of(bundle, precision, cpu_graph)
    report = RepositoryReport(repo)
    batch = max_batch_size

    with atomic_dir(repo) as tmp:
        if "python" in backends:
            cfg = _base_config(MODEL_NAMES["python"], contract, max_batch_size)
            cfg.backend = "python"
            cfg.parameters["evis_graph"].string_value = "model.onnx"
            cfg.parameters["evis_state_inputs"].string_value = ",".join(inp for _, inp in STATE_PAIRS)
            cfg.parameters["evis_threads"].string_value = str(int(threads))
            _add_dynamic_batching(cfg, queue_delay_us)
            _add_instances(cfg, "cpu", instances)
            _write_model(tmp, cfg, {"model.onnx": cpu_graph, "model.py": Path(__file__).with_name("triton_model.py")})
            report.models[cfg.name] = f"python backend, ONNX Runtime CPU, {cpu_graph.name}, max_batch_size {batch}"

        if "onnxruntime" in backends:
            graph = cpu_graph if onnx_device == "cpu" else bundle.onnx_path(precision)
            for stateful in (False, True) if server_state else (False,):
                name = MODEL_NAMES["onnxruntime"] + (STATEFUL_SUFFIX if stateful else "")
                cfg = _base_config(name, contract, batch, stateful)
                cfg.platform = "onnxruntime_onnx"
                cfg.default_model_filename = "model.onnx"
                if stateful:
                    _make_stateful(cfg, contract, queue_delay_us)
                else:
                    _add_dynamic_batching(cfg, queue_delay_us)
                _add_instances(cfg, onnx_device, instances)
                _write_model(tmp, cfg, {"model.onnx": graph}, _state_files(contract) if stateful else None)
                report.models[name] = (
                    f"onnxruntime_onnx on {onnx_device.upper()}, {graph.name}, max_batch_size {batch}"
                    + (", sequence batcher with implicit state" if stateful else "")
                )

        if "tensorrt" in backends:
            plans, sidecars, why = _pick_engines(bundle, precision, engine)
            if not plans:
                report.notes.append(f"evis_tensorrt not written: {why}")
            trt_batch = batch
            if plans:
                accepts = _engine_batch(sidecars)
                trt_batch = min(batch, accepts or 1)
                if trt_batch < batch:
                    report.notes.append(
                        f"evis_tensorrt: max_batch_size {trt_batch}, what the engine's optimization profile accepts "
                        f"(rebuild with `evis build {bundle.path} --precision {precision} --backend trt "
                        f"--batch 1:{batch}:{batch}` for {batch} streams per execution)"
                    )
            for stateful in (False, True) if (server_state and plans) else ((False,) if plans else ()):
                name = MODEL_NAMES["tensorrt"] + (STATEFUL_SUFFIX if stateful else "")
                cfg = _base_config(name, contract, trt_batch, stateful)
                cfg.platform = "tensorrt_plan"
                files = {}
                for i, (cc, plan) in enumerate(sorted(plans.items())):
                    fname = "model.plan" if len(plans) == 1 else f"model.sm{cc.replace('.', '')}.plan"
                    files[fname] = plan
                    if len(plans) > 1 and cc != "default":
                        cfg.cc_model_filenames[cc] = fname
                    if i == 0:
                        cfg.default_model_filename = fname
                if stateful:
                    _make_stateful(cfg, contract, queue_delay_us)
                else:
                    _add_dynamic_batching(cfg, queue_delay_us)
                _add_instances(cfg, "gpu", instances)
                _write_model(tmp, cfg, files, _state_files(contract) if stateful else None)
                report.models[name] = (
                    f"tensorrt_plan, {', '.join(p.name for p in plans.values())}, max_batch_size {trt_batch}"
                    + (", sequence batcher with implicit state" if stateful else "")
                )

        marker = {
            "format": REPOSITORY_FORMAT,
            "version": REPOSITORY_VERSION,
            "bundle": str(Path(bundle.path).resolve()),
            FINGERPRINT_PARAMETER: contract.fingerprint,
            "precision": precision,
            "models": report.models,
            "notes": report.notes,
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return report


__all__ = [
    "MODEL_NAMES",
    "MODEL_PREFERENCE",
    "FINGERPRINT_PARAMETER",
    "ServedContract",
    "RepositoryReport",
    "write_repository",
    "read_config",
    "config_text",
    "contract_of",
    "model_config_pb2",
]
