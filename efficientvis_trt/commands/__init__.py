"""The `evis` commands, one module each, above every layer they use (docs/design.md, "Layers").

Each module exposes `HELP`, `add_arguments(parser)` and `run(args) -> int`; `efficientvis_trt.cli`
builds the parser from them. Heavy imports stay inside `run`, so `evis --help` stays cheap.
"""
