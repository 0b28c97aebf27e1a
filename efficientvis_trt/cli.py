"""The `evis` command line.

Each subcommand lives in its own module exposing `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Modules import their heavy dependencies inside `run`, so building
the parser stays cheap and a missing optional backend never breaks `evis --help`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from efficientvis_trt import __version__
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.extras import missing_module_hint

# name -> module; order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "demo": "efficientvis_trt.commands.demo",
    "infer": "efficientvis_trt.commands.infer",
    "export": "efficientvis_trt.commands.export",
    "build": "efficientvis_trt.commands.build",
    "bench": "efficientvis_trt.commands.bench",
    "eval": "efficientvis_trt.commands.eval",
    "make-synthetic": "efficientvis_trt.commands.make_synthetic",
    "train": "efficientvis_trt.commands.train",
    "plugins": "efficientvis_trt.commands.plugins",
    "doctor": "efficientvis_trt.commands.doctor",
    "serve": "efficientvis_trt.commands.serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evis",
        description="EfficientVIS-TRT: export, build FP16/INT8 engines, run and benchmark video instance segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, `docker stop`, a job scheduler), raised like Ctrl-C so every clean-up runs."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


# errno values of writes that fail for a reason outside the program: one line, not a traceback
_WRITE_ERRNOS = {"ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG", "ENOTDIR", "EISDIR", "EEXIST"}


def _is_write_error(exc: OSError) -> bool:
    import errno

    return exc.errno is not None and errno.errorcode.get(exc.errno) in _WRITE_ERRNOS


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return _main(argv)
    finally:
        if in_main_thread:  # a library caller (or a test run) gets its own handler back
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A command whose paths are one positional list ("paths") takes the ones given after its options too
    # (`evis infer BUNDLE --out O V1 V2`): argparse fills a positional once, from the first run of them.
    if extra and isinstance(getattr(args, "paths", None), list) and not any(e.startswith("-") for e in extra):
        args.paths += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except EvisError as exc:
        if args.verbose:
            raise
        print(f"evis {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        # An optional dependency this command needs (torch for export/train, ...): one line naming its extra.
        hint = missing_module_hint(exc.name or "", args.command)
        if args.verbose or hint is None:
            raise
        print(f"evis {args.command}: error: {hint}", file=sys.stderr)
        return BackendUnavailable.exit_code
    except OSError as exc:
        if args.verbose or not _is_write_error(exc):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"evis {args.command}: error: cannot write{where}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"evis {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
