"""`evis serve BUNDLE --repo DIR`: write a Triton model repository (and, with --local, serve it here).

The repository is written whole or not at all (built in a temp folder beside DIR, then
swapped in); an existing DIR is replaced only if `evis serve` wrote it.
"""

from __future__ import annotations

import argparse
import time

HELP = "write a Triton Inference Server model repository for a bundle (tensorrt_plan, onnxruntime_onnx, python)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from efficientvis_trt.serve.repository import BACKENDS

    parser.add_argument("bundle", metavar="BUNDLE", help="bundle folder from `evis export`")
    parser.add_argument("--repo", required=True, metavar="DIR", help="model repository folder to write")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    parser.add_argument(
        "--models",
        default=",".join(BACKENDS),
        metavar="LIST",
        help="which models, comma-separated from %(default)s (tensorrt only when the bundle has an engine)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, metavar="B", help="max_batch_size: streams per execution (default 8)"
    )
    parser.add_argument(
        "--onnx-device", default="cpu", choices=("cpu", "gpu"), help="instance kind of the onnxruntime model"
    )
    parser.add_argument("--instances", type=int, default=1, metavar="N", help="model instances per device")
    parser.add_argument(
        "--queue-delay-us",
        type=int,
        default=2000,
        metavar="US",
        help="dynamic batcher: how long a request may wait for others (default %(default)s)",
    )
    parser.add_argument("--engine", default=None, metavar="PLAN", help="TensorRT plan to serve (default: the bundle's)")
    parser.add_argument(
        "--server-state",
        action="store_true",
        help="also write *_stateful models: sequence batcher with implicit state (the server keeps the state)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, metavar="N", help="evis_python: ONNX Runtime intra-op threads (0: default)"
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="then serve evis_python here on 127.0.0.1 with the tritonserver of nvidia-pytriton (until Ctrl-C)",
    )
    parser.add_argument("--http-port", type=int, default=8000, help="--local: HTTP port (default %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="--local: gRPC port (default %(default)s)")
    parser.add_argument(
        "--lifetime-s", type=float, default=3600, metavar="S", help="--local: stop by itself after S seconds"
    )


def run(args: argparse.Namespace) -> int:
    from efficientvis_trt.serve.repository import MODEL_NAMES, write_repository

    backends = tuple(m.strip() for m in args.models.split(",") if m.strip())
    report = write_repository(
        args.bundle,
        args.repo,
        precision=args.precision,
        backends=backends,
        max_batch_size=args.max_batch,
        onnx_device=args.onnx_device,
        instances=args.instances,
        queue_delay_us=args.queue_delay_us,
        engine=args.engine,
        server_state=args.server_state,
        threads=args.threads,
    )
    print(f"wrote Triton model repository {report.path}")
    for name, what in report.models.items():
        print(f"  {name}: {what}")
    for note in report.notes:
        print(f"note: {note}")
    if not args.local:
        print(
            f"serve it: docker run --gpus=1 --rm -p8000:8000 -p8001:8001 -v {report.path.resolve()}:/models "
            "nvcr.io/nvidia/tritonserver:<xx.yy>-py3 tritonserver --model-repository=/models  (docs/serving.md)"
        )
        return 0
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.serve.local_server import LocalTritonServer, ensure_server_env

    if MODEL_NAMES["python"] not in report.models:
        raise EvisError("--local serves the python-backend model: keep `python` in --models")
    server = LocalTritonServer(
        report.path,
        MODEL_NAMES["python"],
        env=ensure_server_env(),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        lifetime_s=args.lifetime_s,
    )
    with server:
        print(
            f"serving {MODEL_NAMES['python']} on http {server.http_url}, grpc {server.grpc_url} "
            f"(log {server.log_path}); Ctrl-C stops it"
        )
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    if server.proc.returncode == 124:  # `timeout` ended it
        print(f"stopped after --lifetime-s {args.lifetime_s:g}")
        return 0
    raise EvisError(f"tritonserver ended (exit {server.proc.returncode}): {server.log_tail()}")
