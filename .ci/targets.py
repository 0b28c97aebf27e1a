"""Each deploy target's install, resolved by pip itself without the target's hardware (CI, `python .ci/targets.py`).

For every target (Jetson JetPack 6.1/6.2 and 6.0, x86 CUDA 13 on cp312, x86 CUDA 12 on cp313) pip runs
`install --dry-run --ignore-installed --only-binary=:all: --platform ... --python-version ... --report`:
metadata only (PyPI serves each wheel's METADATA on its own), nothing is installed or downloaded in bulk.
What the target already has is played by stand-in wheels (metadata only, built here): NVIDIA's torch at
the target's version, offered through --find-links and pinned by a constraint, so a requirement that
excludes it makes the resolution fail instead of quietly planning a multi-GB replacement. Packages that
only an index CI cannot reach serves (TensorRT's -libs on pypi.nvidia.com, onnxruntime-gpu for Jetson on
the Jetson AI Lab index) are stand-ins too, with the dependencies their real wheels declare where known.
The report is then checked: torch kept, no CUDA-13 package on a CUDA-12 target, one ONNX Runtime, and the
target's own version caps (numpy < 2 and OpenCV < 5 on JetPack).

The requirement lines are the deploy files the Dockerfiles read (deploy/requirements/*.txt); this project
itself is offered as a metadata wheel made from pyproject.toml, so its extras resolve exactly as declared.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
PYPI_HOSTS = ("pypi.org", "files.pythonhosted.org")
# What NVIDIA's index serves at the time of writing; the bindings of the same version are real PyPI wheels.
TRT_VERSION = "11.4.0.106"
JETSON_ORT_VERSION = "1.23.0"  # the Jetson AI Lab jp6/cu126 build


@dataclass(frozen=True)
class Standin:
    name: str
    version: str
    tag: str = "py3-none-any"
    requires: tuple[str, ...] = ()
    # take Requires-Dist from PyPI's wheel of this name==version for x86_64 (the same project's own build)
    requires_from_pypi: bool = False


@dataclass(frozen=True)
class Target:
    name: str
    arch: str  # "aarch64" | "x86_64"
    glibc: tuple[int, int]
    python: str  # "3.10"
    cuda: int  # the CUDA major the target's driver and libraries are
    torch: str | None  # the preinstalled torch's version (None: nothing preinstalled)
    deploy_file: str  # deploy/requirements/<file>
    extras: tuple[tuple[str, ...], ...]  # further extra sets resolved on this target, each in its own run
    standins: tuple[Standin, ...] = ()
    caps: dict[str, str] = field(default_factory=dict)  # name -> specifier the plan must satisfy


def _trt_standins(cu: int) -> tuple[Standin, ...]:
    name = f"tensorrt-cu{cu}"
    meta = Standin(name, TRT_VERSION, requires=(f"{name}-libs=={TRT_VERSION}", f"{name}-bindings=={TRT_VERSION}"))
    # the -libs wheel's own dependencies are not seen from here (NVIDIA's index is unreachable in CI)
    libs = Standin(f"{name}-libs", TRT_VERSION, tag="py3-none-manylinux_2_28_x86_64")
    return meta, libs


JETSON_ORT = Standin("onnxruntime-gpu", JETSON_ORT_VERSION, tag="cp310-cp310-linux_aarch64", requires_from_pypi=True)
JETSON_CAPS = {"numpy": "<2", "opencv-python-headless": "<5"}
ALL_RUNTIME = ("samples", "bench", "fast", "openvino", "serve")

TARGETS: tuple[Target, ...] = (
    Target(
        "jetson-jp6.1-6.2",
        "aarch64",
        (2, 35),
        "3.10",
        12,
        "2.5.0a0+872d972e41.nv24.08",
        "jetson-jp6.txt",
        (("jetson", "train", "demo", *ALL_RUNTIME), ("jetson", "cpu")),
        (JETSON_ORT,),
        JETSON_CAPS,
    ),
    Target(
        "jetson-jp6.0",
        "aarch64",
        (2, 35),
        "3.10",
        12,
        "2.4.0a0+3bcc3cddb5.nv24.07",
        "jetson-jp6.txt",
        (("jetson", "train", "demo", *ALL_RUNTIME),),
        (JETSON_ORT,),
        JETSON_CAPS,
    ),
    Target(
        "x86-cu13-cp312",
        "x86_64",
        (2, 39),
        "3.12",
        13,
        "2.11.0+cu130",
        "x86-cu13.txt",
        (("gpu", "trt-cu13", "train", "demo", "triton", *ALL_RUNTIME), ("cpu", "export")),
        _trt_standins(13),
    ),
    Target(  # the Dockerfile's base: NVIDIA's PyTorch container 25.10+ (torch 2.9.0a0 ... nv25.10, CUDA 13.0)
        "x86-cu13-cp312-ngc",
        "x86_64",
        (2, 39),
        "3.12",
        13,
        "2.9.0a0+145a3a7bda.nv25.10",
        "x86-cu13.txt",
        (),
        _trt_standins(13),
    ),
    Target(
        "x86-cu12-cp313",
        "x86_64",
        (2, 39),
        "3.13",
        12,
        "2.11.0+cu126",
        "x86-cu12.txt",
        (("gpu", "trt-cu12", "train", "demo", "triton", *ALL_RUNTIME), ("cpu",)),
        _trt_standins(12),
    ),
)


# ---- stand-in wheels ---------------------------------------------------------------------------------


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build_wheel(
    name: str,
    version: str,
    out_dir: Path,
    tag: str = "py3-none-any",
    requires: Iterable[str] = (),
    extras: Iterable[str] = (),
    requires_python: str | None = None,
) -> Path:
    """A metadata-only wheel (METADATA, WHEEL, RECORD; no code): what pip's resolver reads of a distribution."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = f"{_dist(name)}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    meta += [f"Provides-Extra: {e}" for e in extras]
    meta += [f"Requires-Dist: {r}" for r in requires]
    files = {
        f"{info}/METADATA": "\n".join(meta) + "\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: efficientvis-trt-ci\nRoot-Is-Purelib: false\nTag: {tag}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = out_dir / f"{_dist(name)}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def project_wheel(pyproject: Path, out_dir: Path) -> Path:
    """This project as a metadata wheel made from pyproject.toml: its dependencies and every extra, as declared."""
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads(pyproject.read_text())["project"]
    requires = list(project.get("dependencies", []))
    extras = project.get("optional-dependencies", {})
    for extra, reqs in extras.items():
        for line in reqs:
            req = Requirement(line)
            marker = f'extra == "{extra}"' if req.marker is None else f'({req.marker}) and extra == "{extra}"'
            req.marker = None
            requires.append(f"{req}; {marker}")
    return build_wheel(
        project["name"],
        project["version"],
        out_dir,
        requires=requires,
        extras=extras,
        requires_python=project.get("requires-python"),
    )


# ---- pip ---------------------------------------------------------------------------------------------


def platform_tags(arch: str, glibc: tuple[int, int]) -> list[str]:
    """Every platform tag a machine with this glibc accepts (pip's --platform takes exactly those it is given)."""
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    return [*tags, f"manylinux2014_{arch}", f"linux_{arch}"]


def pip_env() -> dict[str, str]:
    """pip as a fresh machine has it: no site config (this machine's caps, mirrors, find-links), no user's index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip_dry_run(
    requirements: Sequence[str],
    arch: str,
    glibc: tuple[int, int],
    python: str,
    find_links: Path,
    constraints: Path | None,
    report: Path,
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "-q"]
    for tag in platform_tags(arch, glibc):
        cmd += ["--platform", tag]
    cmd += ["--python-version", python, "--implementation", "cp", "--find-links", str(find_links)]
    cmd += ["--report", str(report)]
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    cmd += list(requirements)
    return subprocess.run(cmd, capture_output=True, text=True, env=pip_env(), timeout=600)


def read_deploy_file(path: Path, project: str) -> tuple[list[str], list[str]]:
    """(requirements, indexes) of a deploy file; its `.[extras]` line becomes `project[extras]`."""
    reqs, indexes = [], []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("--extra-index-url", "--index-url")):
            indexes.append(line.split(None, 1)[1] if " " in line else line.split("=", 1)[1])
            continue
        if line.startswith("-e "):
            line = line[3:].strip()
        if line.startswith(".["):
            line = project + line[1:]
        elif line == ".":
            line = project
        reqs.append(line)
    return reqs, indexes


def pypi_requires(name: str, version: str, python: str) -> list[str]:
    """Requires-Dist of PyPI's x86_64 wheel of name==version (read from a --no-deps dry-run report)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "-q"]
        cmd += ["--only-binary=:all:", "--python-version", python, "--report", str(report)]
        for tag in platform_tags("x86_64", (2, 28)):
            cmd += ["--platform", tag]
        proc = subprocess.run([*cmd, f"{name}=={version}"], capture_output=True, text=True, env=pip_env())
        if proc.returncode:
            raise SystemExit(f"cannot read {name}=={version}'s metadata from PyPI: {proc.stderr.strip()[-300:]}")
        (item,) = json.loads(report.read_text())["install"]
        return list(item["metadata"].get("requires_dist") or [])


# ---- checks ------------------------------------------------------------------------------------------


def plan_of(report: dict) -> dict[str, dict]:
    return {normalise(i["metadata"]["name"]): i for i in report["install"]}


def cuda13_packages(plan: dict[str, dict]) -> list[str]:
    """Names in the plan that are CUDA 13 builds: *-cu13*, cuda-python/bindings 13, unsuffixed nvidia-* 13.x."""
    bad = []
    for name, item in plan.items():
        version = item["metadata"]["version"]
        lead = re.match(r"\d+", version)
        major = int(lead.group()) if lead else 0
        suffixed = bool(re.search(r"[-_]cu13([-_]|$)", name))
        cuda_python = name in ("cuda-python", "cuda-bindings", "cuda-toolkit") and major >= 13
        # CUDA 13's own wheels dropped the -cuXX suffix (nvidia-cublas 13.x, ...)
        unsuffixed = name.startswith("nvidia-") and not re.search(r"-cu1[12]$", name) and major >= 13
        if suffixed or cuda_python or unsuffixed:
            bad.append(f"{name}=={version}")
    return bad


def check_plan(target: Target, report: dict, torch_wheel: Path | None) -> list[str]:
    """What is wrong with pip's plan for this target (empty: nothing)."""
    from packaging.specifiers import SpecifierSet

    plan = plan_of(report)
    problems = []
    if "torch" in plan:
        item = plan["torch"]
        url = unquote(item.get("download_info", {}).get("url", ""))
        if torch_wheel is None:
            problems.append(f"torch {item['metadata']['version']} would be installed on a target that keeps its own")
        elif item["metadata"]["version"] != target.torch or not url.endswith(torch_wheel.name):
            problems.append(f"torch replaced: {item['metadata']['version']} from {url}")
    if target.cuda == 12:
        bad = cuda13_packages(plan)
        if bad:
            problems.append(f"CUDA-13 packages on a CUDA-12 target: {', '.join(sorted(bad))}")
    orts = [n for n in plan if n in ("onnxruntime", "onnxruntime-gpu")]
    if len(orts) > 1:
        problems.append(f"two ONNX Runtime distributions planned: {orts}")
    for name, spec in target.caps.items():
        if name in plan and plan[name]["metadata"]["version"] not in SpecifierSet(spec):
            problems.append(f"{name} {plan[name]['metadata']['version']} breaks this target's cap {spec}")
    return problems


# ---- main --------------------------------------------------------------------------------------------


def run_target(target: Target, work: Path, project: Path) -> tuple[list[tuple[str, float, list[str], int]], list[str]]:
    """Each install of the target: (what, seconds, problems, packages planned); and the indexes played by stand-ins."""
    links = work / target.name / "links"
    links.mkdir(parents=True, exist_ok=True)
    (links / project.name).write_bytes(project.read_bytes())
    torch_wheel = None
    constraints = None
    if target.torch:
        py = "cp" + target.python.replace(".", "")
        plat = f"linux_{target.arch}"
        torch_wheel = build_wheel("torch", target.torch, links, tag=f"{py}-{py}-{plat}")
        constraints = work / target.name / "constraints.txt"
        constraints.write_text(f"torch=={target.torch}\n")
    for s in target.standins:
        requires = pypi_requires(s.name, s.version, target.python) if s.requires_from_pypi else s.requires
        build_wheel(s.name, s.version, links, tag=s.tag, requires=requires)
    reqs, indexes = read_deploy_file(REPO / "deploy" / "requirements" / target.deploy_file, "efficientvis-trt")
    offline = [i for i in indexes if not any(h in i for h in PYPI_HOSTS)]
    installs = [(f"deploy/requirements/{target.deploy_file}", reqs)]
    installs += [(f"efficientvis-trt[{','.join(e)}]", [f"efficientvis-trt[{','.join(e)}]"]) for e in target.extras]
    results = []
    for i, (what, req) in enumerate(installs):
        report = work / target.name / f"report{i}.json"
        start = time.perf_counter()
        proc = pip_dry_run(req, target.arch, target.glibc, target.python, links, constraints, report)
        secs = time.perf_counter() - start
        if proc.returncode:
            tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-500:]
            results.append((what, secs, [f"pip cannot resolve it: {tail}"], 0))
            continue
        data = json.loads(report.read_text())
        results.append((what, secs, check_plan(target, data, torch_wheel), len(data["install"])))
    return results, offline


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", help="only these targets (default: all)")
    parser.add_argument("--keep", metavar="DIR", help="keep the stand-ins and pip's reports in DIR")
    parser.add_argument(
        "--pyproject", type=Path, default=REPO / "pyproject.toml", help="resolve another pyproject.toml (a control)"
    )
    args = parser.parse_args(argv)
    chosen = [t for t in TARGETS if not args.target or t.name in args.target]
    if not chosen:
        print(f"targets.py: error: no target named {args.target}; known: {[t.name for t in TARGETS]}", file=sys.stderr)
        return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evis-targets-"))
    if not args.pyproject.is_file():
        print(f"targets.py: error: no such file {args.pyproject}", file=sys.stderr)
        return 2
    project = project_wheel(args.pyproject, work / "project")
    failed = 0
    start = time.perf_counter()
    for target in chosen:
        torch = f"torch {target.torch} kept" if target.torch else "no torch"
        results, offline = run_target(target, work, project)
        print(
            f"{target.name} (cp{target.python}, {target.arch}, glibc {target.glibc[0]}.{target.glibc[1]}, "
            f"CUDA {target.cuda}, {torch}; stand-ins for {', '.join(offline) or 'no other index'}):"
        )
        for what, secs, problems, count in results:
            status = "FAIL" if problems else "ok"
            print(f"  {status:4} {what}  ({count} packages, {secs:.1f} s)")
            for p in problems:
                print(f"       {p}")
            failed += bool(problems)
    print(f"targets: {failed} failed, {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
