"""A real Triton Inference Server on 127.0.0.1, from the nvidia-pytriton wheel (tests, benchmarks, `--local`).

Why a separate environment: the `tritonserver` 2.51 binary that the nvidia-pytriton wheel
bundles has only the Python backend, and that backend needs numpy < 2 (with numpy 2 its
tensors come back silently wrong), while this package runs on numpy 2. So the server
side lives in its own virtualenv, made once and cached under
~/.cache/efficientvis-trt/serve-venv-<hash of SERVER_REQUIREMENTS and the Python version>
(`EVIS_SERVE_VENV` overrides the folder). It holds nvidia-pytriton, numpy < 2 and the
onnxruntime version installed here (same numbers on both sides), and the python-backend
model (`triton_model.py`) imports nothing else.

The server is started straight from the bundled binary (not through PyTriton's Python
API): the model repository is the one `evis serve` writes, and only its python-backend
model is loaded (`--model-control-mode explicit`). It listens on loopback only, is run
under `timeout` so it stops by itself, and is killed by process group on `stop()`.
See docs/serving.md, "A real server on this machine".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from efficientvis_trt.errors import BackendUnavailable, EvisError


def _onnxruntime_requirement() -> str:
    """The client's ONNX Runtime version, so that the server computes exactly what local inference computes."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"onnxruntime=={version('onnxruntime')}"
    except PackageNotFoundError:
        return "onnxruntime>=1.20"


SERVER_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy>=1.26,<2", _onnxruntime_requirement())
LOOPBACK = "127.0.0.1"
_READY_MARKER = "evis-serve-env-ready"


def _env_key() -> str:
    text = "\n".join([*SERVER_REQUIREMENTS, f"python{sys.version_info[0]}.{sys.version_info[1]}"])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_env_path() -> Path:
    override = os.environ.get("EVIS_SERVE_VENV")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "efficientvis-trt" / f"serve-venv-{_env_key()}"


@dataclass
class ServerEnv:
    """The numpy<2 virtualenv holding tritonserver (from nvidia-pytriton) and onnxruntime."""

    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return self.path / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"

    @property
    def server_dir(self) -> Path:
        """tritonserver with the python backend stub for this Python (prepared once, like PyTriton does)."""
        return self.path / "tritonserver"

    @property
    def libs(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"


def _run(cmd: list[str], what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EvisError(f"{what} took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise EvisError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def ensure_server_env(path: str | os.PathLike | None = None, *, say=print, timeout: float = 900) -> ServerEnv:
    """The cached server environment, created on first use (a minute or two, needs PyPI); locked across processes.

    Creation failure is an EvisError with pip's last lines (tests report it, they do not skip).
    """
    env = ServerEnv(Path(path) if path else default_env_path())
    if (env.path / _READY_MARKER).is_file():
        return env
    if not (3, 8) <= sys.version_info[:2] <= (3, 13):
        raise BackendUnavailable(
            f"the bundled tritonserver has python backend stubs for Python 3.8-3.13, not {sys.version.split()[0]}"
        )
    env.path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{env.path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be creating it right now
        if (env.path / _READY_MARKER).is_file():
            return env
        if env.path.exists():
            shutil.rmtree(env.path)  # a half-made one from an interrupted run
        say(f"creating the Triton server environment {env.path} (once; needs PyPI): {', '.join(SERVER_REQUIREMENTS)}")
        base = getattr(sys, "_base_executable", None) or sys.executable
        start = time.monotonic()
        _run([base, "-m", "venv", str(env.path)], f"python -m venv {env.path}", 120)
        _run(
            [str(env.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *SERVER_REQUIREMENTS],
            f"pip install {' '.join(SERVER_REQUIREMENTS)} into {env.path}",
            timeout,
        )
        versions = _run(
            [str(env.python), "-c", "import numpy, onnxruntime; print(numpy.__version__, onnxruntime.__version__)"],
            "checking the server environment",
            120,
        ).split()
        if not versions or int(versions[0].split(".")[0]) >= 2:
            raise EvisError(f"the server environment got numpy {versions[:1]}; Triton's python backend needs numpy < 2")
        _prepare_server_dir(env)
        (env.path / _READY_MARKER).write_text(
            f"numpy {versions[0]} onnxruntime {versions[1]}; made in {time.monotonic() - start:.0f} s\n"
        )
        say(f"server environment ready (numpy {versions[0]}, onnxruntime {versions[1]})")
    return env


def _prepare_server_dir(env: ServerEnv) -> None:
    """Copy the wheel's tritonserver folder and put this Python's backend stub where the python backend looks."""
    dist = env.site_packages / "pytriton" / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not (dist / "bin" / "tritonserver").is_file() or not stub.is_file():
        raise EvisError(f"{dist} has no tritonserver binary or no python backend stub for Python {version}")
    shutil.copytree(dist, env.server_dir, ignore=shutil.ignore_patterns("python_backend_stubs"))
    shutil.copy2(stub, env.server_dir / "backends" / "python" / "triton_python_backend_stub")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class LocalTritonServer:
    """tritonserver on 127.0.0.1 serving one model of an `evis serve` repository; a context manager.

    `lifetime_s`: the process is run under `timeout`, so a forgotten server ends by itself.
    `kill()` (SIGKILL, for failure tests) and `start()` again reuse the same ports.
    """

    def __init__(
        self,
        repo: str | os.PathLike,
        model: str = "evis_python",
        *,
        env: ServerEnv | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        lifetime_s: float = 600,
        log_path: str | os.PathLike | None = None,
    ):
        self.repo = Path(repo).resolve()
        self.model = model
        self.env = env or ensure_server_env()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.lifetime_s = lifetime_s
        self.log_path = Path(log_path) if log_path else self.repo.parent / f"tritonserver-{self.http_port}.log"
        self.proc: subprocess.Popen | None = None
        self.shm_prefix = f"evis-triton-{os.getpid()}-{self.http_port}-"

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def url(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url

    def _environ(self) -> dict[str, str]:
        import sysconfig

        env = dict(os.environ)
        # the stub embeds libpython: prefer the one of the Python the server env was made from
        libdirs = [str(self.env.libs), sysconfig.get_config_var("LIBDIR") or ""]
        env["LD_LIBRARY_PATH"] = ":".join([*filter(None, libdirs), env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        env["PATH"] = f"{self.env.path / 'bin'}:{env.get('PATH', '')}"  # the stub's Python finds the venv's numpy
        env.pop("PYTHONPATH", None)
        env.setdefault("OMP_NUM_THREADS", "2")
        return env

    def command(self) -> list[str]:
        return [
            "timeout",
            "-k",
            "5",
            str(int(self.lifetime_s)),
            str(self.env.server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={self.env.server_dir / 'backends'}",
            f"--cache-directory={self.env.server_dir / 'caches'}",
            "--model-control-mode=explicit",
            f"--load-model={self.model}",
            f"--http-address={LOOPBACK}",
            f"--grpc-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
            # named, so that the shared memory of a killed server can be found and removed
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]

    def start(self, timeout_s: float = 120) -> LocalTritonServer:
        """Start and wait until the model is ready; an EvisError with the log's last lines otherwise."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self._environ(), start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        ready = f"http://{self.http_url}/v2/models/{self.model}/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EvisError(f"tritonserver exited with {self.proc.returncode} while starting: {self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(ready, timeout=2) as r:
                if r.status == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise EvisError(f"tritonserver did not get {self.model} ready in {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 4) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        errors = [t for t in text if t.startswith("E")] or text
        return " | ".join(t.strip()[:300] for t in errors[-lines:])

    def _signal_group(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # the group this server was started in: timeout, tritonserver, stubs

    def kill(self) -> None:
        """SIGKILL the server (and its python backend stubs) at once, as a crash would."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._remove_shm()

    def _remove_shm(self) -> None:
        """A killed python backend leaves its shared-memory regions in /dev/shm: remove this server's."""
        shm = Path("/dev/shm")
        if shm.is_dir():
            for f in shm.glob(f"{self.shm_prefix}*"):
                with contextlib.suppress(OSError):
                    f.unlink()

    def stop(self, grace_s: float = 10) -> None:
        self._signal_group(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._remove_shm()

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["SERVER_REQUIREMENTS", "ServerEnv", "ensure_server_env", "LocalTritonServer", "free_port"]
