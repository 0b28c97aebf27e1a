"""PyTorch -> per-clip ONNX graph (docs/contract.md) -> bundle (docs/bundle.md).

Exporter choice: the dynamo exporter (torch.export + onnxscript) first, the TorchScript
exporter as fallback (torch deprecates it); `exporter="dynamo"|"torchscript"` forces one
and the bundle records which ran. Both write the same custom node (see `torch_ops`).

The bundle is written as one transaction (`Bundle.create`, docs/bundle.md, "Transactions
and locking"): an interrupted or failed export (verification over tolerance included)
leaves no half bundle and an existing bundle untouched, and only a bundle of ours (its
format tag) is ever replaced.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.errors import EvisError
from efficientvis_trt.memory import release_freed_memory

log = logging.getLogger(__name__)

FLAVOURS = ("plugin", "inline")
EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18  # torch 2.13's dynamo exporter writes opset 18 when asked for 16/17


def check_options(flavour: str, opset: int, exporter: str) -> None:
    from efficientvis_trt.export.roi_align_onnx import MIN_OPSET

    if flavour not in FLAVOURS:
        raise EvisError(f"--flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
    if exporter not in EXPORTERS:
        raise EvisError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if int(opset) < MIN_OPSET:
        raise EvisError(
            f"--opset {opset} is too old: RoiAlign's half_pixel mode needs opset >= {MIN_OPSET} "
            "(TensorRT silently falls back to output_half_pixel below it)"
        )
    if int(opset) > 23:
        raise EvisError(f"--opset {opset} is newer than the exporters support (<= 23)")


# ---- torch -> ONNX ------------------------------------------------------------------------
def _clip_graph(model):
    """forward_clip, outputs as a tuple in docs/contract.md "I/O table" order (exporters name outputs by position)."""
    import torch

    from efficientvis_trt.contract import OUTPUT_NAMES

    class ClipGraph(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, frames, query_in, boxes_in):
            out = self.inner.forward_clip(frames, query_in, boxes_in)
            return tuple(out[k] for k in OUTPUT_NAMES)

    return ClipGraph(model).eval()


@contextlib.contextmanager
def export_roi_align(model, route: str) -> Iterator[None]:
    """Temporarily swap every stage's RoIAlign for the single-op export version (no model copy)."""
    from efficientvis_trt.export.torch_ops import ExportRoIAlign

    originals = [stage.roi_align for stage in model.stages]
    try:
        for stage, orig in zip(model.stages, originals):
            stage.roi_align = ExportRoIAlign(orig.attrs, route)
        yield
    finally:
        for stage, orig in zip(model.stages, originals):
            stage.roi_align = orig


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[io.StringIO]:
    """The exporters print progress and warnings; keep them for errors, show them only with -v."""
    buf = io.StringIO()
    if verbose:
        yield buf
        return
    loggers = [
        logging.getLogger(n)
        for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir", "onnxslim")
    ]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


EXAMPLE_STREAMS = 2  # the traced B: torch.export specialises a dimension whose example size is 0 or 1


def _example_inputs(model, clip_len: int, input_hw: tuple[int, int]):
    """B = EXAMPLE_STREAMS streams, each a different clip, all from the clip-0 state."""
    import torch

    g = torch.Generator().manual_seed(0)
    b = EXAMPLE_STREAMS
    frames = torch.randint(0, 256, (b, clip_len, *input_hw, 3), dtype=torch.uint8, generator=g)
    query, boxes = model.initial_state()
    return frames, query[None].repeat(b, 1, 1), boxes[None].repeat(b, 1, 1)


def torch_to_onnx(model, clip_len: int, input_hw: tuple[int, int], opset: int, route: str, verbose: bool = False):
    """One exporter run -> ModelProto with the custom node (no local function yet); B is dynamic."""
    import onnx
    import torch

    from efficientvis_trt.contract import BATCH_DIM, INPUT_NAMES, OUTPUT_NAMES
    from efficientvis_trt.export.torch_ops import onnx_translation_table

    args = _example_inputs(model, clip_len, input_hw)
    wrapper = _clip_graph(model)
    with export_roi_align(model, route), _quiet(verbose), torch.no_grad():
        if route == "dynamo":
            program = torch.onnx.export(
                wrapper,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                custom_translation_table=onnx_translation_table(),
                dynamic_shapes=tuple({0: torch.export.Dim(BATCH_DIM, min=1)} for _ in INPUT_NAMES),
                external_data=False,
                optimize=True,
                verbose=False,
            )
            return program.model_proto
        buf = io.BytesIO()
        torch.onnx.export(
            wrapper,
            args,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: BATCH_DIM} for name in (*INPUT_NAMES, *OUTPUT_NAMES)},
            do_constant_folding=True,
            custom_opsets={"efficientvis": 1},
        )
        return onnx.load_from_string(buf.getvalue())


def export_onnx(
    model,
    clip_len: int,
    input_hw: tuple[int, int],
    flavour: str = "plugin",
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    verbose: bool = False,
):
    """The per-clip graph as a ModelProto (+ info: which exporter ran, and why a fallback happened)."""
    from efficientvis_trt.export.roi_align_onnx import attach_function, inline_function

    check_options(flavour, opset, exporter)
    routes = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    errors: list[str] = []
    if exporter == "auto" and opset < DYNAMO_MIN_OPSET:
        routes = ["torchscript"]
        errors.append(f"dynamo: skipped, it writes opset >= {DYNAMO_MIN_OPSET} only (torch 2.13)")
    proto = None
    for route in routes:
        try:
            proto = torch_to_onnx(model, clip_len, input_hw, opset, route, verbose)
            got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
            if got != opset:  # the dynamo exporter emits >= 18 whatever was asked
                raise RuntimeError(f"asked for opset {opset}, the exporter wrote opset {got}")
            break
        except Exception as exc:  # exporter internals raise anything; the fallback is the point
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            errors.append(f"{route}: {type(exc).__name__}: {first[:300]}")
            log.warning(
                "%s exporter failed (%s)%s",
                route,
                first[:200],
                "; falling back to the TorchScript exporter" if route != routes[-1] else "",
            )
            if route == routes[-1]:
                raise EvisError(f"ONNX export failed with every exporter: {'; '.join(errors)}") from exc
    attach_function(proto, opset)
    if flavour == "inline":
        proto = inline_function(proto)
    from efficientvis_trt.contract import io_table, model_io_dims

    stamp_io(proto, io_table(model_io_dims(model.config.model, clip_len, input_hw)))
    proto.producer_name = "efficientvis-trt"
    info = {"exporter": route, "exporter_fallback_reason": errors or None}
    return proto, info


# ---- graph checks --------------------------------------------------------------------------
def check_graph(
    path: Path, expected_io: list[dict], flavour: str, attrs: dict, num_stages: int, roi_shape: list[int]
) -> dict[str, Any]:
    """checker (full) + shape inference + the I/O contract + the RoIAlign node/function contract.

    `roi_shape`: the RoIAlign output per image, [N, C, P, P]; its leading B*T dimension must stay symbolic.
    """
    import onnx

    from efficientvis_trt.bundle import check_onnx_io
    from efficientvis_trt.export.roi_align_onnx import custom_nodes, node_attributes
    from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE
    from efficientvis_trt.precision.graph import structure_only

    onnx.checker.check_model(str(path), full_check=True)
    check_onnx_io(path, expected_io)
    model = structure_only(onnx.load(str(path)))  # every check below reads the graph, none the weights
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.graph.value_info}
    info: dict[str, Any] = {}
    if flavour == "plugin":
        nodes = custom_nodes(model)
        if len(nodes) != num_stages:
            raise RuntimeError(f"expected {num_stages} {DOMAIN}::{OP_TYPE} nodes, found {len(nodes)}")
        for node in nodes:
            if node_attributes(node) != attrs:
                raise RuntimeError(f"node {node.name} has attributes {node_attributes(node)}, expected {attrs}")
            if len(node.input) != 5:
                raise RuntimeError(f"node {node.name} has {len(node.input)} inputs, expected 5 (P2..P5, rois)")
            got = shapes.get(node.output[0])
            if not got or got[0] != 0 or got[1:] != list(roi_shape):
                raise RuntimeError(
                    f"shape inference gives {got} for {node.name}'s output, expected [B*T (symbolic), "
                    f"{', '.join(map(str, roi_shape))}]"
                )
        funcs = [f for f in model.functions if f.domain == DOMAIN and f.name == OP_TYPE]
        if len(funcs) != 1:
            raise RuntimeError(f"the model-local function {DOMAIN}::{OP_TYPE} is missing")
        if not any(o.domain == DOMAIN for o in model.opset_import):
            raise RuntimeError(f"the model does not import the {DOMAIN} domain")
        info.update(nodes=len(nodes), local_function=True)
    else:
        if (
            any(n.domain == DOMAIN for n in model.graph.node)
            or model.functions
            or any(o.domain == DOMAIN for o in model.opset_import)
        ):
            raise RuntimeError(f"inline flavour still references the {DOMAIN} domain")
        roi = [n for n in model.graph.node if n.op_type == "RoiAlign"]
        if len(roi) != 4 * num_stages:
            raise RuntimeError(f"inline flavour: expected {4 * num_stages} RoiAlign nodes, found {len(roi)}")
        info.update(nodes=0, roi_align_nodes=len(roi), local_function=False)
    info["graph_nodes"] = len(model.graph.node)
    return info


def stamp_io(proto, expected_io: list[dict]) -> None:
    """Declare the graph's inputs and outputs exactly as the I/O table says (B symbolic, the rest static).

    Inlining the RoIAlign function and the simplifier re-infer output shapes and can leave
    derived symbols ('Addlogits_dim_1') where the contract has numbers; the graph checks'
    strict shape inference afterwards proves the declared shapes consistent with the graph.
    """
    rows = {r["name"]: r["shape"] for r in expected_io}
    for vi in list(proto.graph.input) + list(proto.graph.output):
        if vi.name not in rows:
            continue
        dims = vi.type.tensor_type.shape.dim
        del dims[:]
        for d in rows[vi.name]:
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = int(d)


SIMPLIFY_MAX_PASSES = 10  # onnxslim's own limit on its optimise / shape-inference rounds


def _node_signature(model) -> list[tuple]:
    return [(n.op_type, tuple(n.input), tuple(n.output)) for n in model.graph.node]


def simplify(path: str | os.PathLike):
    """onnxslim (constant folding, fusions) of the graph at `path`. Returns (model, tool) or (None, reason).

    onnxslim's own shape inference (ONNX Runtime's symbolic inference, once per pass) copies
    the whole model, weights included, several times: with it, onnxslim was the peak of an r50
    export. Here the tensor shapes are inferred once, on the graph without its weights
    (`structure_only`), onnxslim runs with `no_shape_infer`, and the two alternate until a
    pass changes nothing, as onnxslim's own loop does. On the dynamo exports of r50 and tiny
    this gives the nodes and weights onnxslim gives left to itself, at about three quarters of its
    memory; on tiny's TorchScript export three Shape nodes fewer, as ONNX's data propagation
    knows those shapes (docs/build-memory.md, "Export").
    """
    import onnx
    import onnxslim

    from efficientvis_trt.precision.graph import structure_only

    model = onnx.load(str(path))
    try:
        with _quiet(False):
            for _ in range(SIMPLIFY_MAX_PASSES):  # shapes of the tensors the last pass made, then fold again
                inferred = onnx.shape_inference.infer_shapes(structure_only(model), data_prop=True)
                del model.graph.value_info[:]
                model.graph.value_info.extend(inferred.graph.value_info)
                del inferred
                before = _node_signature(model)
                model = onnxslim.slim(model, no_shape_infer=True)
                if _node_signature(model) == before:
                    break
            return model, f"onnxslim {getattr(onnxslim, '__version__', '?')}"
    except Exception as exc:  # a simplifier crash must never fail the export
        return None, f"onnxslim failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


# ---- the bundle ----------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    import onnxslim
    import torch

    from efficientvis_trt import __version__

    out = {
        "efficientvis_trt": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "onnxslim": onnxslim.__version__,  # a hard dependency, like the others
    }
    return out


def _state_bytes(state: tuple[np.ndarray, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, query=np.ascontiguousarray(state[0], np.float32), boxes=np.ascontiguousarray(state[1], np.float32))
    return buf.getvalue()


def export_bundle(
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    config: Any = None,
    init: str = "checkpoint",
    seed: int = 0,
    clip_len: int | None = None,
    size: tuple[int, int] | str | None = None,
    flavour: str = "plugin",
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    exporter: str = "auto",
    simplify_graph: bool = True,
    num_clips: int = 3,
    video: str | os.PathLike | None = None,
    verbose: bool = False,
    echo: Callable[[str], None] | None = print,
) -> Path:
    """Export a checkpoint (or a seeded random init) to a verified bundle at `out`; returns `out`."""
    import onnx
    from tqdm import tqdm

    from efficientvis_trt.bundle import MODEL_FILE, STATE_FILE, Bundle, check_export_target
    from efficientvis_trt.contract import io_table, model_io_dims
    from efficientvis_trt.export.model_source import load_source, weights_fingerprint
    from efficientvis_trt.export.verify import format_report, load_clips, public_report, torch_reference, verify_model
    from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE, RoIAlignAttrs
    from efficientvis_trt.video import PAD_VALUE, parse_size

    say = echo or (lambda _s: None)
    check_options(flavour, opset, exporter)
    if isinstance(size, str):
        size = parse_size(size)
    if verify and num_clips < 1:
        raise EvisError(f"verification needs at least 1 clip, got {num_clips}")
    out = check_export_target(out)  # before the long work: a wrong --out costs nothing
    if video is not None and verify and not Path(video).is_file():
        raise EvisError(f"--video {video} not found")

    t_start = time.perf_counter()
    src = load_source(checkpoint, config, init, seed, clip_len, size)
    model, cfg, t = src.model, src.config, src.clip_len
    m = cfg.model
    hw = (int(m.input_size[0]), int(m.input_size[1]))
    expected_io = io_table(model_io_dims(m, t, hw))
    attrs = RoIAlignAttrs.from_pooler(m.pooler).onnx_attributes()
    roi_shape = [m.num_queries, m.hidden_dim, m.pooler.resolution, m.pooler.resolution]
    state = tuple(s.numpy() for s in model.initial_state())

    steps = tqdm(total=4 if verify else 3, desc=f"export {out.name}", unit="step", disable=echo is None, leave=False)
    steps.set_postfix_str("torch -> onnx")
    t0 = time.perf_counter()
    raw, info = export_onnx(model, t, hw, flavour, opset, exporter, verbose)
    export_s = time.perf_counter() - t0
    steps.update()

    # One model in memory at a time (docs/build-memory.md, "Export"): the PyTorch outputs the
    # graph is verified against are computed now and the PyTorch model is let go; the raw
    # graph waits on disk while the simplifier works and while its output is verified.
    fingerprint = weights_fingerprint(model)
    reference = None
    if verify:
        steps.set_postfix_str("pytorch reference")
        reference = torch_reference(model, load_clips(video, t, hw, num_clips)[0], state)
    src.model = None
    del model
    release_freed_memory()

    with Bundle.create(out) as tx:
        tx.add_file(STATE_FILE, _state_bytes(state), role="state")
        model_path = tx.staging_path(MODEL_FILE)
        raw_path = tx.staging_path("raw.onnx")  # a temporary of the transaction: removed with it
        onnx.save(raw, str(raw_path))
        del raw
        release_freed_memory()
        candidates: list[tuple[str | None, Any]] = []
        notes: list[str] = [] if simplify_graph else ["simplifier disabled (--no-simplify)"]
        if simplify_graph:
            steps.set_postfix_str("simplify")
            slim, note = simplify(str(raw_path))
            if slim is not None:
                candidates.append((note, slim))
                del slim
            else:
                notes.append(note)
        candidates.append((None, raw_path))
        steps.update()

        report: dict[str, Any] | None = None
        chosen = None
        while candidates:
            tool, proto = candidates.pop(0)
            if isinstance(proto, Path):  # the raw export: stamped in export_onnx
                proto.replace(model_path)
            else:
                stamp_io(proto, expected_io)  # the simplifier re-infers output shapes
                onnx.save(proto, str(model_path))
            del proto
            release_freed_memory()
            try:
                graph_info = check_graph(model_path, expected_io, flavour, attrs, m.num_stages, roi_shape)
            except Exception as exc:
                if tool is None:
                    raise
                notes.append(f"{tool} output failed the graph checks ({str(exc).splitlines()[0][:200]})")
                continue
            if verify:
                steps.set_postfix_str("verify" + (" (simplified)" if tool else ""))
                report = verify_model(None, model_path, state, t, hw, num_clips, video, reference, progress=False)
                if not report["passed"]:
                    steps.clear()
                    say(format_report(report))
                    if tool is not None:
                        notes.append(f"{tool} output failed verification, kept the un-simplified graph")
                        continue
                    worst = max(report["outputs"].items(), key=lambda kv: kv[1]["max_abs"] / kv[1]["limit"])
                    raise EvisError(
                        f"verification failed: ONNX Runtime differs from PyTorch on '{worst[0]}' by "
                        f"{worst[1]['max_abs']:.3g} (limit {worst[1]['limit']:.3g}); nothing written"
                    )
            chosen = (tool, graph_info)
            break
        steps.update(steps.total - steps.n)
        steps.close()
        tool, graph_info = chosen
        raw_path.unlink(missing_ok=True)
        if verify:
            say(format_report(report))

        tx.add_file(MODEL_FILE, model_path, role="graph", precision="fp32")
        tx.metadata.update(
            {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "versions": _versions(),
                "config": cfg.to_dict(),
                "class_names": src.class_names,
                "clip_len": t,
                "input_size": list(hw),
                "io": expected_io,
                "letterbox": {
                    "rule": "fit inside (keep aspect), pad bottom-right",
                    "pad_value": PAD_VALUE,
                    "canvas_hw": list(hw),
                    "interpolation": "INTER_AREA when shrinking, else INTER_LINEAR",
                    "implementation": "efficientvis_trt.video.Letterbox",
                },
                "preprocessing": "in the graph: uint8 BGR NHWC -> float RGB NCHW, (x - pixel_mean) / pixel_std",
                "clip_padding": "a video whose length is not a multiple of clip_len pads its last clip by repeating "
                "the last frame; outputs of padded frames are dropped",
                "onnx": {
                    "file": MODEL_FILE,
                    "opset": int(opset),
                    "flavour": flavour,
                    **info,
                    "simplifier": tool,
                    "simplifier_note": "; ".join(notes) or None,
                    "roi_align": {
                        "domain": DOMAIN if flavour == "plugin" else None,
                        "op_type": OP_TYPE,
                        "attributes": attrs,
                        **graph_info,
                    },
                },
                "source": src.meta,
                "weights_sha256": fingerprint,
                "verification": public_report(report) if verify else {"skipped": True, "reason": "--no-verify"},
                "timing_s": {"export": round(export_s, 2), "total": round(time.perf_counter() - t_start, 2)},
            }
        )
        if src.meta["kind"] == "checkpoint" and t != m.clip_len:
            tx.metadata["notes"] = [
                f"graph clip length {t} < the checkpoint's clip_len {m.clip_len}: "
                f"frames use the first {t} rows of the time embedding, as forward_clip does"
            ]
        # the commit runs the checks every consumer's open runs, on the staged files
    say(
        f"wrote {out} ({flavour} flavour, opset {opset}, {info['exporter']} exporter, "
        f"{'simplified by ' + tool if tool else 'not simplified'}) in {time.perf_counter() - t_start:.1f} s"
    )
    return out
