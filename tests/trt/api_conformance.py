"""API conformance of our TensorRT code against NVIDIA's real Python bindings of one TensorRT version.

Run by test_api_conformance.py in a subprocess per version, with the real ``tensorrt`` package of
that version (from the ``tensorrt-cu12-bindings`` wheel) on PYTHONPATH and three stub C libraries
(libnvinfer, libnvonnxparser, libnvinfer_plugin: the nine entry points, all returning NULL) on
LD_LIBRARY_PATH. ``import tensorrt`` then works and every enum, class, method and pybind signature is
the real one, but nothing can execute: this is API conformance, not execution (docs/tensorrt.md,
"What is proved how"). Prints one JSON report: {"version", "problems": [...], "checked": {...}}.

What it checks, each derived from our code, not from a hand-kept list:
1. uses: every ``trt.X`` / ``trt.X.Y`` / ``trtp.X`` and every method or property used on a TensorRT
   object (receivers typed by assignment from TensorRT calls, by ``x.__class__ = trt.Cls`` and by the
   conventional names in RECEIVER_NAMES) in the AST of efficientvis_trt/trt/, plugins/ and
   runtime/trt_backend.py exists in this version, and each call's positional count and keywords fit one
   of its pybind overloads; uses under ``getattr(..., default)``, ``hasattr`` or a try/except catching
   AttributeError are version switches and may be absent. AOT-only code (``if aot:`` bodies and
   functions whose name contains "aot") is checked only where the version has AOT plugins.
2. plugins: our version switch (select_plugin_path) agrees with what this ``tensorrt.plugin`` offers;
   our definitions pass NVIDIA's own registration and validation (``trtp.register``, ``autotune``,
   ``aot_impl`` / ``impl``); the AOT implementation, called the way the bindings call it, returns what
   the bindings accept, with PTX whose entry name is the returned kernel name and whose parameters are
   the 5 input pointers, the declared extra int32 scalars, then the output pointer.
   The Polygraphy callables we import (and methods on the objects they make) accept our arguments,
   keyword by keyword, over the ``__init__`` chain (Polygraphy itself is NVIDIA's to keep in step).
3. order: our build and our deserialize call ``trt.init_libnvinfer_plugins`` before the parser /
   runtime is created (the stubs make the creation itself fail, which ends the attempt).
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import tempfile
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["efficientvis_trt/trt", "efficientvis_trt/plugins", "efficientvis_trt/runtime/trt_backend.py"]

# Conventional variable / attribute names of TensorRT objects in our code (leading "_" ignored).
RECEIVER_NAMES = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "config": "IBuilderConfig",
    "parser": "OnnxParser",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "runtime": "Runtime",
    "inspector": "EngineInspector",
    "logger": "Logger",
    "timing_cache": "ITimingCache",
    "layer": "ILayer",
    "core": "IPluginV3OneCore",
}
MODULE_NAMES = {"trt": "tensorrt", "trtp": "tensorrt.plugin"}


# ---- 1. uses, from the AST ------------------------------------------------------------------------------


class Use:
    def __init__(self, where, owner, member, call=None, guarded=False, aot_only=False, store=False):
        self.where, self.owner, self.member = where, owner, member
        self.call = call  # (n_positional, [keywords]) or None
        self.guarded, self.aot_only, self.store = guarded, aot_only, store

    def __repr__(self):
        return f"{self.where}: {self.owner}.{self.member}"


def _chain(node):
    """`trt.Logger.WARNING` -> ["trt", "Logger", "WARNING"]; `self._engine` -> ["self", "_engine"]; else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


class UseCollector:
    """Walks one function at a time, in statement order, keeping a type environment for receivers."""

    def __init__(self, trt, path: Path):
        self.trt, self.path, self.uses = trt, path, []
        self.hints = False

    def _cls(self, name):
        return getattr(self.trt, name, None)

    def _receiver_type(self, chain, env):
        key = ".".join(chain)
        if key in env:
            return env[key]
        last = chain[-1].lstrip("_")
        if chain[0] in MODULE_NAMES or len(chain) > 2 or not self.hints:
            return None
        if len(chain) == 2 and chain[0] != "self":
            return None
        return RECEIVER_NAMES.get(last)

    def _return_type(self, owner_cls, member):
        """The class name pybind's docstring gives as the return type of owner.member (call or property)."""
        attr = getattr(owner_cls, member, None)
        doc = ""
        if isinstance(attr, property):
            doc = getattr(attr.fget, "__doc__", "") or ""
        elif attr is not None:
            doc = getattr(attr, "__doc__", "") or ""
        m = re.search(r"->\s*(?:tensorrt\.)+(?:tensorrt\.)?(\w+)", doc)
        return m.group(1) if m and self._cls(m.group(1)) is not None else None

    def expr_type(self, node, env):
        """The TensorRT class name an expression evaluates to, if we can tell."""
        if isinstance(node, ast.Call):
            chain = _chain(node.func)
            if chain and len(chain) == 2 and chain[0] == "trt" and isinstance(self._cls(chain[1]), type):
                return chain[1]  # trt.Builder(...)
            if isinstance(node.func, ast.Attribute):
                owner = self.expr_type(node.func.value, env)
                if owner:
                    return self._return_type(self._cls(owner), node.func.attr)
            return None
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain:
                t = self._receiver_type(chain, env)
                if t:
                    return t
            owner = self.expr_type(node.value, env)
            return self._return_type(self._cls(owner), node.attr) if owner else None
        if isinstance(node, ast.Name):
            return env.get(node.id) or (RECEIVER_NAMES.get(node.id.lstrip("_")) if self.hints else None)
        return None

    # -- recording ------------------------------------------------------------------------------------
    def record_expr(self, node, env, guarded, aot_only):
        for sub in ast.walk(node):
            # getattr(trt.X, "Y", default) / hasattr(...): a version switch
            is_probe = (
                isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("getattr", "hasattr")
            )
            if is_probe and len(sub.args) >= 2 and isinstance(sub.args[1], ast.Constant):
                owner = sub.args[0]
                chain = _chain(owner)
                if chain and chain[0] in MODULE_NAMES:
                    self.uses.append(
                        Use(self._where(sub), ".".join(chain), sub.args[1].value, guarded=True, aot_only=aot_only)
                    )
        self._walk_uses(node, env, guarded, aot_only)

    def _where(self, node):
        return f"{self.path.relative_to(REPO)}:{node.lineno}"

    def _walk_uses(self, node, env, guarded, aot_only, store=False):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute):
                self._attr_use(node.func, env, guarded, aot_only, call=node)
                self._walk_uses(node.func.value, env, guarded, aot_only)
            else:
                self._walk_uses(node.func, env, guarded, aot_only)
            for a in node.args:
                self._walk_uses(a, env, guarded, aot_only)
            for k in node.keywords:
                self._walk_uses(k.value, env, guarded, aot_only)
            return
        if isinstance(node, ast.Attribute):
            self._attr_use(node, env, guarded, aot_only, store=store)
            self._walk_uses(node.value, env, guarded, aot_only)
            return
        for child in ast.iter_child_nodes(node):
            self._walk_uses(child, env, guarded, aot_only)

    def _attr_use(self, node: ast.Attribute, env, guarded, aot_only, call=None, store=False):
        if node.attr == "__class__":
            return
        chain = _chain(node)
        spec = None
        if call is not None:
            spec = (
                len(call.args),
                [k.arg for k in call.keywords if k.arg],
                any(isinstance(a, ast.Starred) for a in call.args),
            )
        if chain and chain[0] in MODULE_NAMES and len(chain) >= 2:
            owner = ".".join(chain[:-1])
            self.uses.append(Use(self._where(node), owner, chain[-1], spec, guarded, aot_only, store))
            return
        owner = self.expr_type(node.value, env)
        if owner:
            self.uses.append(Use(self._where(node), f"trt.{owner}", node.attr, spec, guarded, aot_only, store))

    # -- statements in order ----------------------------------------------------------------------------
    def block(self, stmts, env, guarded=False, aot_only=False):
        for st in stmts:
            self.stmt(st, env, guarded, aot_only)

    def stmt(self, st, env, guarded, aot_only):
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function(st, aot_only or "aot" in st.name.lower())
            return
        if isinstance(st, ast.ClassDef):
            self.block(st.body, {}, guarded, aot_only)
            return
        if isinstance(st, ast.Try):
            catches = any(
                h.type is None or any(n in ast.dump(h.type) for n in ("AttributeError", "'Exception'", "BaseException"))
                for h in st.handlers
            )
            self.block(st.body, env, guarded or catches, aot_only)
            for h in st.handlers:
                self.block(h.body, env, guarded, aot_only)
            self.block(st.orelse + st.finalbody, env, guarded, aot_only)
            return
        if isinstance(st, ast.If):
            is_aot = isinstance(st.test, ast.Name) and st.test.id == "aot"
            self.record_expr(st.test, env, guarded, aot_only)
            self.block(st.body, dict(env), guarded, aot_only or is_aot)
            self.block(st.orelse, dict(env), guarded, aot_only)
            return
        if isinstance(st, (ast.For, ast.While, ast.With)):
            for field in ("iter", "test"):
                if getattr(st, field, None) is not None:
                    self.record_expr(getattr(st, field), env, guarded, aot_only)
            for item in getattr(st, "items", []):
                self.record_expr(item.context_expr, env, guarded, aot_only)
            self.block(st.body, env, guarded, aot_only)
            self.block(getattr(st, "orelse", []), env, guarded, aot_only)
            return
        if isinstance(st, ast.Assign):
            self.record_expr(st.value, env, guarded, aot_only)
            for target in st.targets:
                chain = _chain(target) if isinstance(target, (ast.Name, ast.Attribute)) else None
                if chain and chain[-1] == "__class__":
                    cls = _chain(st.value)
                    if cls and cls[0] == "trt":
                        env[".".join(chain[:-1])] = cls[-1]
                    continue
                if isinstance(target, ast.Attribute):
                    self._walk_uses(target, env, guarded, aot_only, store=True)
                if chain:
                    t = self.expr_type(st.value, env)
                    if t:
                        env[".".join(chain)] = t
            return
        self.record_expr(st, env, guarded, aot_only)

    def function(self, fn, aot_only):
        for deco in fn.decorator_list:  # @trtp.register(...), @trtp.aot_impl(...)
            self.record_expr(deco, {}, False, aot_only)
        for arg in fn.args.args + fn.args.kwonlyargs:
            if arg.annotation is not None:  # P2: trtp.TensorDesc
                self.record_expr(arg.annotation, {}, False, aot_only)
        if fn.returns is not None:
            self.record_expr(fn.returns, {}, False, aot_only)
        self.block(fn.body, {}, False, aot_only)


def collect_uses(trt) -> list[Use]:
    uses = []
    for src in SOURCES:
        root = REPO / src
        for path in sorted([root] if root.is_file() else root.rglob("*.py")):
            tree = ast.parse(path.read_text())
            collector = UseCollector(trt, path)
            # Conventional receiver names count only in files that work with the TensorRT module.
            collector.hints = any(isinstance(n, ast.Name) and n.id in MODULE_NAMES for n in ast.walk(tree))
            collector.block(tree.body, {})
            uses += collector.uses
    return uses


_SIG = re.compile(r"^\s*(?:\d+\.\s*)?(\w+)\((.*)\)\s*->", re.MULTILINE)


def _pybind_params(doc: str, name: str) -> list[list[str]] | None:
    """Parameter names (without self) of each pybind overload of `name` in its docstring."""
    overloads = []
    for m in _SIG.finditer(doc or ""):
        if m.group(1) != name:
            continue
        params, depth, cur = [], 0, ""
        for ch in m.group(2):
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            if ch == "," and depth == 0:
                params.append(cur)
                cur = ""
            else:
                cur += ch
        if cur.strip():
            params.append(cur)
        names = [p.split(":")[0].split("=")[0].strip().lstrip("*") for p in params]
        overloads.append([n for n in names if n and n != "self"])
    return overloads or None


def check_call(obj, member: str, spec) -> str | None:
    """None when some overload of obj (a function or class) accepts `spec` = (n_positional, keywords, starred)."""
    n_pos, keywords, starred = spec
    target = obj
    doc_name = member
    if isinstance(obj, type):
        target, doc_name = obj.__init__, "__init__"
    doc = getattr(target, "__doc__", "") or ""
    overloads = _pybind_params(doc, doc_name)
    if overloads is None:
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return None  # no signature to check against
        params = [p for p in sig.parameters.values() if p.name != "self"]
        if any(p.kind == p.VAR_POSITIONAL for p in params) or starred:
            n_pos = 0
        try:
            sig.bind_partial(*([None] * (n_pos + (1 if isinstance(obj, type) else 0))), **dict.fromkeys(keywords))
        except TypeError as exc:
            return f"signature {sig} does not accept {n_pos} positional + {keywords}: {exc}"
        return None
    for params in overloads:
        if (starred or n_pos <= len(params)) and all(k in params[n_pos:] or k in params for k in keywords):
            return None
    return f"no overload accepts {n_pos} positional + keywords {keywords}: {overloads}"


def check_uses(trt, trtp, has_aot: bool, uses: list[Use]) -> tuple[list[str], dict]:
    problems, checked = [], {"members": 0, "calls": 0, "guarded_absent": [], "aot_only_skipped": 0}
    modules = {"trt": trt, "trtp": trtp}
    for use in uses:
        root, *rest = use.owner.split(".")
        if root == "trtp" and trtp is None:
            continue  # this version has no tensorrt.plugin: the version switch never reaches that code
        if use.aot_only and not has_aot:
            checked["aot_only_skipped"] += 1
            continue
        owner = modules[root]
        for part in rest:
            owner = getattr(owner, part, None)
            if owner is None:
                break
        if owner is None:
            if not use.guarded:
                problems.append(f"{use.where}: {use.owner} does not exist in this version")
            continue
        member = getattr(owner, use.member, None)
        checked["members"] += 1
        if member is None and not hasattr(owner, use.member):
            if use.guarded:
                checked["guarded_absent"].append(f"{use.owner}.{use.member}")
            elif use.store and not isinstance(owner, type):
                pass
            else:
                problems.append(f"{use.where}: {use.owner}.{use.member} does not exist in this version")
            continue
        if use.store and isinstance(owner, type):
            prop = inspect.getattr_static(owner, use.member, None)
            if isinstance(prop, property) and prop.fset is None:
                problems.append(f"{use.where}: {use.owner}.{use.member} is read-only in this version")
        if use.call is not None and (callable(member) or isinstance(member, type)):
            checked["calls"] += 1
            why = check_call(member, use.member, use.call)
            if why:
                problems.append(f"{use.where}: {use.owner}.{use.member}(...): {why}")
    checked["guarded_absent"] = sorted(set(checked["guarded_absent"]))
    return problems, checked


# ---- 1b. the Polygraphy calls ----------------------------------------------------------------------------


def _accepted_keywords(obj) -> tuple[set[str], bool, int]:
    """(named parameters, takes *args, max positional) over the __init__ chain of a class, or of a function."""
    funcs = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] if isinstance(obj, type) else [obj]
    names, star, max_pos = set(), False, 0
    for fn in funcs:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        params = [p for p in sig.parameters.values() if p.name != "self"]
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        star |= any(p.kind == p.VAR_POSITIONAL for p in params)
        max_pos = max(max_pos, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break  # this __init__ does not forward keywords further up the chain
    return names, star, max_pos


def check_polygraphy() -> tuple[list[str], dict]:
    """Every Polygraphy callable our code imports, and methods on what they return, accept our arguments."""
    import importlib

    problems, checked = [], []
    for src in SOURCES:
        root = REPO / src
        for path in sorted([root] if root.is_file() else root.rglob("*.py")):
            tree = ast.parse(path.read_text())
            imported = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("polygraphy"):
                    module = importlib.import_module(node.module)
                    imported |= {a.asname or a.name: getattr(module, a.name) for a in node.names}
            if not imported:
                continue
            made = {}  # variable -> the Polygraphy class it was made from (profile = Profile())
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                    f = node.value.func
                    if isinstance(f, ast.Name) and isinstance(imported.get(f.id), type):
                        for t in node.targets:
                            if isinstance(t, ast.Name):
                                made[t.id] = imported[f.id]
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                f, target, label = node.func, None, ""
                if isinstance(f, ast.Name) and f.id in imported:
                    target, label = imported[f.id], f.id
                elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in made:
                    target, label = getattr(made[f.value.id], f.attr, None), f"{made[f.value.id].__name__}.{f.attr}"
                    if target is None:
                        problems.append(f"{path.relative_to(REPO)}:{node.lineno}: {label} does not exist")
                        continue
                if target is None or not callable(target):
                    continue
                names, star, max_pos = _accepted_keywords(target)
                n_pos = len(node.args)
                keywords = [k.arg for k in node.keywords if k.arg]
                bad = [k for k in keywords if k not in names]
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                if bad:
                    problems.append(f"{where}: polygraphy {label} does not take {bad}")
                if n_pos > max_pos and not star:
                    problems.append(f"{where}: polygraphy {label} takes at most {max_pos} positional, got {n_pos}")
                checked.append(label)
    return problems, {"calls": sorted(set(checked))}


# ---- 2. our plugin definitions through NVIDIA's registration and validation --------------------------------


class _Registry:
    """Stands in for the C++ plugin registry only (the one thing registration needs from the library)."""

    def __init__(self):
        self.creators = {}

    def register_creator(self, creator, namespace):
        self.creators[(creator.name, namespace)] = creator
        return True

    def get_creator(self, name, version, namespace):
        return self.creators.get((name, namespace))


def check_plugins(trt, trtp, version: str) -> tuple[list[str], dict]:
    from efficientvis_trt.plugins.spec import PLUGIN_ID, RoIAlignAttrs
    from efficientvis_trt.plugins.triton_roi_align import ptx_entry_params
    from efficientvis_trt.trt import plugin as trt_plugin
    from efficientvis_trt.trt.env import GpuInfo

    problems, info = [], {}
    path = trt_plugin.select_plugin_path(version)  # Triton and torch with CUDA assumed present
    info["selected"] = path.mode
    has_jit = trtp is not None and hasattr(trtp, "impl")
    has_aot = trtp is not None and hasattr(trtp, "aot_impl")
    info["tensorrt.plugin"] = {"present": trtp is not None, "impl": has_jit, "aot_impl": has_aot}
    if path.mode == "aot" and not has_aot:
        problems.append(f"select_plugin_path says aot for {version} but tensorrt.plugin has no aot_impl")
    if path.mode == "jit" and not has_jit:
        problems.append(f"select_plugin_path says jit for {version} but tensorrt.plugin has no impl")
    if path.mode not in ("aot", "jit"):
        info["registration"] = f"not registered on this version ({path.mode}): nothing to validate"
        return problems, info

    registry = _Registry()
    trt.get_plugin_registry = lambda: registry  # C++ registry stand-in (tensorrt/plugin/_lib.py)
    try:
        trt_plugin._define_plugin(trtp, aot=path.mode == "aot")
    except Exception as exc:
        problems.append(f"NVIDIA's registration/validation rejected our definitions: {type(exc).__name__}: {exc}")
        return problems, info
    from tensorrt.plugin import _lib

    desc = _lib.QDP_REGISTRY[PLUGIN_ID]
    info["registered"] = {
        "creators": [f"{ns}::{name}" for name, ns in registry.creators],
        "attrs": list(desc.input_attrs),
        "inputs": list(desc.input_tensor_names),
        "autotune": desc.autotune_func is not None,
        "impl": "aot_impl" if getattr(desc, "aot_impl_func", None) else "impl",
    }
    if not registry.creators:
        problems.append("registration did not reach the plugin registry")
    if desc.autotune_func is None:
        problems.append("no autotune definition registered")

    attrs = trt_plugin.attrs_to_fields(RoIAlignAttrs())
    if list(desc.input_attrs) != list(attrs):
        problems.append(f"registered attribute order {list(desc.input_attrs)} != ONNX node's {list(attrs)}")

    def tensor(dtype, rank):
        # Dummy shape expressions, as tensorrt.plugin uses outside a shape-calculation context.
        return trtp.TensorDesc(trtp.ShapeExprs(rank, _is_dummy=True), dtype)

    for name, fdt, rdt in (
        ("fp32", trt.DataType.FLOAT, trt.DataType.FLOAT),
        ("fp16", trt.DataType.HALF, trt.DataType.FLOAT),
    ):
        ins = [tensor(fdt, 4) for _ in range(4)] + [tensor(rdt, 3)]
        try:  # our shape/type function, called as get_output_shapes calls it (keyword attributes)
            outs = desc.register_func(*ins, **attrs)
            outs = outs if isinstance(outs, tuple) else (outs,)
            if len(outs) != 1 or outs[0].dtype != fdt:
                problems.append(f"register ({name}): outputs {outs} are not one tensor of the features' type")
        except Exception as exc:
            problems.append(f"register ({name}): {type(exc).__name__}: {exc}")
            outs = (tensor(fdt, 5),)
        try:
            combos = desc.autotune_func(*ins, *attrs.values(), outs)
            assert all(isinstance(c, trtp.AutoTuneCombination) for c in combos), combos
            assert all(len(c.io_types) == 6 for c in combos), [c.io_types for c in combos]
        except Exception as exc:
            problems.append(f"autotune ({name}): {type(exc).__name__}: {exc}")
        if path.mode != "aot":
            continue
        # Called as tensorrt/plugin/_plugin_class.py get_launch_params calls it, then its own type checks.
        trt_plugin.gpu_info_or_none = lambda: GpuInfo("stub", (9, 0), "test")  # no GPU: the build GPU's cc
        try:
            kernel_name, ptx, launch, extra = desc.aot_impl_func(*ins, *attrs.values(), outs, 0)
        except Exception:
            problems.append(f"aot_impl ({name}) raised: {traceback.format_exc(limit=3)}")
            continue
        if not isinstance(kernel_name, (str, bytes)) or not isinstance(ptx, (str, bytes)):
            problems.append(f"aot_impl ({name}): kernel name / PTX must be str or bytes")
            continue
        if not isinstance(launch, trtp.KernelLaunchParams):
            problems.append(f"aot_impl ({name}): launch params are {type(launch)}, not trtp.KernelLaunchParams")
        if not isinstance(extra, trtp.SymExprs) or not all(isinstance(a, trtp.SymInt32) for a in extra):
            problems.append(f"aot_impl ({name}): extra args must be trtp.SymIntExprs of SymInt32")
            continue
        kernel_name = kernel_name.decode() if isinstance(kernel_name, bytes) else kernel_name
        ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
        if not re.search(rf"^\s*\.visible\s+\.entry\s+{re.escape(kernel_name)}\s*\(", ptx, re.MULTILINE):
            problems.append(f"aot_impl ({name}): PTX has no entry named {kernel_name}")
            continue
        params = ptx_entry_params(ptx, kernel_name)
        kinds = ["ptr" if ".u64" in p or ".b64" in p else "s32" for p in params]
        want = ["ptr"] * len(ins) + ["s32"] * len(extra) + ["ptr"] * len(outs)
        info[f"aot_{name}"] = {"kernel": kernel_name, "params": len(params), "extra_scalars": len(extra)}
        if kinds != want:
            problems.append(f"aot_impl ({name}): PTX parameters {kinds} != inputs, extra scalars, outputs {want}")
    return problems, info


# ---- 3. init_libnvinfer_plugins before parse and deserialize -----------------------------------------------


def check_order(trt) -> tuple[list[str], dict]:
    from efficientvis_trt.trt import engine as E
    from efficientvis_trt.trt import engine_build as B
    from efficientvis_trt.trt import env

    calls: list[str] = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    for name in ("init_libnvinfer_plugins", "Builder", "OnnxParser", "Runtime"):
        setattr(trt, name, spy(name, getattr(trt, name)))
    env.cuda_device_info = lambda device=None: ("Stub GPU", (9, 0))
    problems, info = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        from onnx import TensorProto, helper, save

        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        )
        onnx_path = Path(tmp) / "model.onnx"
        save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(onnx_path))
        for what, attempt, creator in (
            ("build", lambda: B.build_engine(Path(tmp), "fp32", onnx_path), "Builder"),
            ("deserialize", lambda: E.deserialize(Path(tmp) / "model.onnx"), "Runtime"),
        ):
            calls.clear()
            try:
                attempt()
                problems.append(f"{what}: expected the stub library to stop it")
            except Exception as exc:  # the stubs: "factory function returned nullptr"
                info[what] = {"calls": list(calls), "stopped_by": f"{type(exc).__name__}: {exc}"[:160]}
            if creator not in calls:
                problems.append(f"{what}: never reached trt.{creator} (calls {calls}; {info.get(what)})")
            elif "init_libnvinfer_plugins" not in calls[: calls.index(creator)]:
                problems.append(f"{what}: trt.{creator} was created before trt.init_libnvinfer_plugins ({calls})")
    return problems, info


def main() -> int:
    sys.path.insert(0, str(REPO))
    import tensorrt as trt

    try:
        import tensorrt.plugin as trtp
    except ImportError:
        trtp = None
    version = str(trt.__version__)
    has_aot = trtp is not None and hasattr(trtp, "aot_impl")
    report = {"version": version, "problems": [], "checked": {}}
    uses = collect_uses(trt)
    problems, checked = check_uses(trt, trtp, has_aot, uses)
    report["problems"] += problems
    report["checked"]["uses"] = {"found": len(uses), **checked}
    checks = (
        ("polygraphy", check_polygraphy),
        ("plugins", lambda: check_plugins(trt, trtp, version)),
        ("order", lambda: check_order(trt)),
    )
    for name, check in checks:
        try:
            problems, info = check()
        except Exception:
            problems, info = [f"{name} check crashed: {traceback.format_exc(limit=4)}"], {}
        report["problems"] += problems
        report["checked"][name] = info
    print("CONFORMANCE " + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
