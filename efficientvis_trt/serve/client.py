"""`evis infer [BUNDLE] VIDEO... --server HOST:PORT`: the clip loop with Triton Inference Server as its backend.

Why this is only a backend: the tracklet state is explicit graph I/O, so a remote model
is a function of (frames, query_in, boxes_in) like any local one. `TritonClientBackend`
implements the runtime's Backend protocol over tritonclient (gRPC or HTTP); the
Predictor (and the multi-stream runner, which sends B streams as one request of batch
B) holds every stream's state exactly as it does locally, so results JSON and overlays
are the local ones.

Failures: a request is a pure function of its inputs, so resending it is always safe.
When the server is unreachable or restarting, `run` resends the same clip with the same
state (the state from before it: the Predictor replaces its state only with a reply),
with exponential backoff, for up to `retry_s`; then it fails with one line. A request
the server rejects (shape, dtype, another bundle's state) fails at once with the
server's message. See docs/serving.md, "Client-held state" and "Retries".
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from efficientvis_trt.contract import INPUT_DTYPES, INPUT_NAMES, OUTPUT_NAMES
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.serve.repository import FINGERPRINT_PARAMETER, INSTALL_HINT, MODEL_PREFERENCE, ServedContract

log = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http")
_TRITON_DTYPES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32"}
INPUTS = tuple((name, _TRITON_DTYPES[INPUT_DTYPES[name]]) for name in INPUT_NAMES)  # (name, Triton dtype)
OUTPUTS = OUTPUT_NAMES
_RETRY_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED")
_RETRY_HTTP = ("502", "503", "504")
# while a restarted server is still loading the model, it answers like this (both protocols)
_RETRY_WORDS = ("not ready", "unknown model", "connection", "socket closed", "failed to connect")


def _tritonclient(protocol: str):
    if protocol not in PROTOCOLS:
        raise EvisError(f"unknown --protocol {protocol!r}: use grpc or http")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        from tritonclient.utils import InferenceServerException
    except (ImportError, RuntimeError):
        raise BackendUnavailable(INSTALL_HINT) from None
    return module, InferenceServerException


def parse_server(spec: str) -> str:
    """'HOST:PORT' (or 'grpc://HOST:PORT') -> 'HOST:PORT'; anything else is one clear error."""
    text = spec.split("://", 1)[-1].rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EvisError(f"--server {spec!r}: give HOST:PORT (gRPC default port 8001, HTTP 8000)")
    return f"{host}:{port}"


def is_retryable(exc: BaseException) -> bool:
    """Whether resending the same request may succeed: the server is down, restarting or overloaded.

    An answer of the model itself (a bad request, a failing graph) is final.
    """
    text = str(exc).lower()
    if "evis_python:" in text:
        return False
    if isinstance(exc, (OSError, TimeoutError)):  # refused, reset, timed out (the HTTP client raises these)
        return True
    if type(exc).__module__.split(".")[0] in ("gevent", "geventhttpclient"):  # connection closed mid-reply
        return True
    status = exc.status() if callable(getattr(exc, "status", None)) else None
    if status and (any(code in str(status) for code in _RETRY_GRPC) or str(status) in _RETRY_HTTP):
        return True
    return any(words in text for words in _RETRY_WORDS)


@dataclass
class RetryPolicy:
    """Exponential backoff: first_s, doubling up to max_s, for at most total_s per request."""

    total_s: float = 120.0
    first_s: float = 0.2
    max_s: float = 5.0


@dataclass
class ServerModel:
    """One served model as a client sees it: where, which, and its contract (from its config parameters)."""

    url: str
    protocol: str
    name: str
    max_batch_size: int
    contract: ServedContract


class _Connection:
    """One tritonclient client (not shared between threads); remade after a transport failure."""

    def __init__(self, url: str, protocol: str, timeout_s: float):
        self.module, self.error_type = _tritonclient(protocol)
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self.client = None

    def get(self):
        if self.client is None:
            if self.protocol == "grpc":
                self.client = self.module.InferenceServerClient(self.url)
            else:
                self.client = self.module.InferenceServerClient(
                    self.url, connection_timeout=min(10.0, self.timeout_s), network_timeout=self.timeout_s
                )
        return self.client

    def reset(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def _with_retries(call, what: str, url: str, retry: RetryPolicy, conn: _Connection, cancel: threading.Event | None):
    """call(client) until it succeeds, a non-retryable error, cancellation or the retry budget is spent."""
    deadline = time.monotonic() + retry.total_s
    wait = retry.first_s
    attempt = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise EvisError(f"{what}: cancelled (another stream failed)")
        try:
            return call(conn.get())
        except Exception as exc:
            if not is_retryable(exc):
                raise EvisError(f"the server at {url} refused {what}: {_one_line(exc)}") from None
            attempt += 1
            conn.reset()
            left = deadline - time.monotonic()
            if left <= 0:
                raise EvisError(
                    f"the server at {url} was unavailable for {retry.total_s:.0f} s ({attempt} tries) "
                    f"during {what}: {_one_line(exc)}"
                ) from None
            log.warning("server %s unavailable (%s); retrying %s in %.1f s", url, _one_line(exc), what, wait)
            time.sleep(min(wait, left))
            wait = min(wait * 2, retry.max_s)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _model_config(client, protocol: str, name: str) -> dict[str, Any]:
    if protocol == "grpc":
        return client.get_model_config(name, as_json=True)["config"]
    return client.get_model_config(name)


def connect(
    server: str,
    protocol: str = "grpc",
    model: str | None = None,
    *,
    bundle: Any = None,
    retry: RetryPolicy | None = None,
    timeout_s: float = 60.0,
) -> ServerModel:
    """Find the served model (the first ready of MODEL_PREFERENCE unless `model` is named) and read its contract.

    With `bundle`, its weights fingerprint must be the served one: a state is meaningless for other weights.
    """
    url = parse_server(server)
    retry = retry or RetryPolicy()
    conn = _Connection(url, protocol, timeout_s)

    def find(client):
        names = [model] if model else list(MODEL_PREFERENCE)
        for name in names:
            if client.is_model_ready(name):
                return name, _model_config(client, protocol, name)
        if model:
            raise EvisError(f"model {model!r} is not ready on {url}")
        raise EvisError(f"no evis model is ready on {url} (looked for {', '.join(names)}): give --model NAME")

    try:
        name, config = _with_retries(find, "finding the model", url, retry, conn, None)
    finally:
        conn.reset()
    contract = ServedContract.from_config(config, f"model {name!r} on {url}")
    if bundle is not None:
        want = bundle.metadata.get("weights_sha256")
        if want != contract.fingerprint:
            raise EvisError(
                f"model {name!r} on {url} serves other weights than {bundle.path} (fingerprint "
                f"{contract.fingerprint[:16]}... vs {str(want)[:16]}...): its state would be meaningless here"
            )
    limit = int(config.get("max_batch_size", 0))
    if limit < 1:
        raise EvisError(f"model {name!r} on {url} has max_batch_size {limit}: rewrite its repository with `evis serve`")
    return ServerModel(url, protocol, name, limit, contract)


class TritonClientBackend:
    """The runtime Backend protocol over a served model: one request per `run` (B streams = batch B).

    Inputs without the stream dimension are one stream; inputs with it ([B, T, H, W, 3],
    [B, N, C], [B, N, 4]) are sent as one request per `max_batch_size` streams. Every
    request names the bundle fingerprint of its state (`evis_fingerprint` parameter).
    Not thread-safe: one per thread (each has its own connection).
    """

    name = "triton"
    device = "remote"

    def __init__(
        self,
        served: ServerModel,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 60.0,
        cancel: threading.Event | None = None,
    ):
        self.served = served
        self.precision = served.contract.precision
        self.retry = retry or RetryPolicy()
        self.cancel = cancel
        self.conn = _Connection(served.url, served.protocol, timeout_s)
        self.requests = 0  # sent successfully
        self.retries = 0

    def _infer(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        module = self.conn.module
        tried = [0]

        def call(client):
            tried[0] += 1
            inputs = []
            for name, dtype in INPUTS:
                value = arrays[name]
                tensor = module.InferInput(name, list(value.shape), dtype)
                tensor.set_data_from_numpy(value)
                inputs.append(tensor)
            outputs = [module.InferRequestedOutput(n) for n in OUTPUTS]
            reply = client.infer(
                self.served.name,
                inputs,
                outputs=outputs,
                parameters={FINGERPRINT_PARAMETER: self.served.contract.fingerprint},
                **({"client_timeout": self.conn.timeout_s} if self.served.protocol == "grpc" else {}),
            )
            return {n: reply.as_numpy(n) for n in OUTPUTS}

        out = _with_retries(call, "a clip", self.served.url, self.retry, self.conn, self.cancel)
        self.requests += 1
        self.retries += tried[0] - 1
        return out

    def run(self, inputs: Mapping[str, Any], keep_on_device: Collection[str] = ()) -> dict[str, Any]:
        arrays = {}
        for name in INPUT_NAMES:
            value = np.asarray(inputs[name])
            want = INPUT_DTYPES[name]
            if value.dtype != want:
                if name == "frames":
                    raise EvisError(f"frames must be uint8 BGR (as OpenCV decodes them), got {value.dtype}")
                value = value.astype(want)
            arrays[name] = np.ascontiguousarray(value)
        limit = self.served.max_batch_size
        if arrays["frames"].ndim == 4:  # one stream without its stream dimension
            out = self._infer({k: v[None] for k, v in arrays.items()})
            return {n: v[0] for n, v in out.items()}
        total = arrays["frames"].shape[0]
        parts = [self._infer({k: v[s : s + limit] for k, v in arrays.items()}) for s in range(0, total, limit)]
        return {n: np.concatenate([p[n] for p in parts]) for n in OUTPUTS}

    def to_host(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def close(self) -> None:
        self.conn.reset()


def remote_runtime(
    served: ServerModel,
    *,
    retry: RetryPolicy | None = None,
    timeout_s: float = 60.0,
    cancel: threading.Event | None = None,
):
    """A RuntimeModel whose backend is the served model: `Predictor(remote_runtime(...))` runs videos through it."""
    from efficientvis_trt.runtime.load import RuntimeModel

    c = served.contract
    backend = TritonClientBackend(served, retry=retry, timeout_s=timeout_s, cancel=cancel)
    reason = f"triton: model {served.name} on {served.protocol}://{served.url} (server-side {c.precision})"
    return RuntimeModel(
        backend,
        c.clip_len,
        tuple(c.input_hw),
        (c.init_query.copy(), c.init_boxes.copy()),
        list(c.class_names),
        reason,
        None,
        [],
        origin=f"{served.protocol}://{served.url}/{served.name}",
    )


__all__ = [
    "PROTOCOLS",
    "RetryPolicy",
    "ServerModel",
    "TritonClientBackend",
    "connect",
    "remote_runtime",
    "parse_server",
    "is_retryable",
    "add_server_arguments",
    "split_server_args",
    "server_runtime",
]


# ---- `evis infer --server` --------------------------------------------------------------------------


def add_server_arguments(parser) -> None:
    """The `evis infer` options for running through a Triton server (cheap: no imports)."""
    group = parser.add_argument_group("through Triton Inference Server (docs/serving.md)")
    group.add_argument(
        "--server",
        default=None,
        metavar="HOST:PORT",
        help="run the clips on this Triton server (SOURCE may then be omitted: the model config carries the "
        "contract); each stream's state stays here and travels with every request",
    )
    group.add_argument("--protocol", default="grpc", choices=PROTOCOLS, help="--server protocol (default grpc)")
    group.add_argument("--model", default=None, metavar="NAME", help="served model (default: the first ready evis_*)")
    group.add_argument(
        "--retry-s",
        type=float,
        default=120.0,
        metavar="S",
        help="resend a clip for up to S seconds while the server is unavailable (default %(default)s)",
    )


def split_server_args(args) -> Any:
    """`evis infer --server`, before anything runs: refuse local-backend flags; SOURCE is a bundle or the first VIDEO.

    Returns the Bundle (its fingerprint must then be the served one) or None, and moves a
    SOURCE that is not a bundle folder to the front of `args.videos`. No network yet.
    """
    from pathlib import Path

    from efficientvis_trt.bundle import METADATA_FILE

    local_only = [
        flag
        for flag, on in (
            ("--backend", args.backend != "auto"),
            ("--device", args.device is not None),
            ("--cuda-graph", args.cuda_graph),
        )
        if on
    ]
    if local_only:
        raise EvisError(f"{', '.join(local_only)} choose a local backend: with --server the server's model runs")
    if args.retry_s < 0:
        raise EvisError(f"--retry-s must be >= 0, got {args.retry_s}")
    parse_server(args.server)
    if Path(args.source).is_dir() and (Path(args.source) / METADATA_FILE).is_file():
        from efficientvis_trt.bundle import Bundle

        return Bundle.open(args.source)
    args.videos = [args.source, *args.videos]
    return None


def server_runtime(args, bundle: Any = None) -> Any:
    """Connect to `args.server` and return the RuntimeModel to build the Predictor from; sets `args.precision`."""
    served = connect(args.server, args.protocol, args.model, bundle=bundle, retry=RetryPolicy(total_s=args.retry_s))
    if args.precision not in ("fp32", served.contract.precision):
        raise EvisError(
            f"--precision {args.precision}: model {served.name} on {served.url} serves {served.contract.precision}"
        )
    args.precision = served.contract.precision
    return remote_runtime(served, retry=RetryPolicy(total_s=args.retry_s))
