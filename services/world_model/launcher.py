"""Start the ``tritonserver`` binary shipped in the nvidia-pytriton wheel on our model repository.

Recipe (DESIGN.md): copy ``libtriton_python.so``, ``triton_python_backend_utils.py`` and the
Python-3.11 ``triton_python_backend_stub`` into a ``backends/python`` directory; run
tritonserver with the venv's ``bin`` first on PATH and ``LD_LIBRARY_PATH`` holding the
interpreter's LIBDIR. CUDA/NVML warnings on CPU machines are harmless. On a GPU cluster use
NVIDIA's Triton container with the same repository instead (see the README in this folder).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent / "model_repository"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def prepare_backend_dir(workdir: Path) -> Path:
    """backends/python with the library, the utils module and the stub for this Python."""
    root = _pytriton_root()
    target = workdir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(root / "backends" / "python" / name, target / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton has no python backend stub for Python {version}")
    shutil.copy2(stub, target / "triton_python_backend_stub")
    (target / "triton_python_backend_stub").chmod(0o755)
    return workdir / "backends"


@dataclass
class TritonPorts:
    http: int
    grpc: int
    metrics: int


class TritonServer:
    def __init__(self, model_dir: str | Path, workdir: str | Path, ports: TritonPorts,
                 repository: Path = REPOSITORY, log_file: Path | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.model_dir = Path(model_dir).resolve()
        self.workdir = Path(workdir)
        self.ports = ports
        self.repository = repository
        self.log_file = log_file or self.workdir / "tritonserver.log"
        self.process: subprocess.Popen | None = None

    def command(self, backend_dir: Path) -> list[str]:
        return [str(_pytriton_root() / "bin" / "tritonserver"),
                f"--model-repository={self.repository}", f"--backend-directory={backend_dir}",
                f"--http-address={self.host}", f"--grpc-address={self.host}",
                f"--metrics-address={self.host}",
                f"--http-port={self.ports.http}", f"--grpc-port={self.ports.grpc}",
                f"--metrics-port={self.ports.metrics}", "--exit-timeout-secs=10",
                "--log-verbose=0", "--disable-auto-complete-config",
                "--model-load-thread-count=2"]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        bundled = str(_pytriton_root().parents[1] / "nvidia_pytriton.libs")  # the stub's libcudart
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, bundled, env.get("LD_LIBRARY_PATH", "")) if p)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env["W2A_WM_DIR"] = str(self.model_dir)
        env.setdefault("W2A_TORCH_THREADS", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        return env

    @property
    def ready_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.ports.http}/v2/health/ready"

    def start(self, timeout: float = 180.0) -> TritonServer:
        if not (self.model_dir / "transformer").is_dir():
            raise FileNotFoundError(f"{self.model_dir}: not a world-model directory")
        self.workdir.mkdir(parents=True, exist_ok=True)
        backend_dir = prepare_backend_dir(self.workdir)
        log = open(self.log_file, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        self.process = subprocess.Popen(self.command(backend_dir), env=self.environment(),
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}; see {self.log_file}")
            try:
                if urllib.request.urlopen(self.ready_url, timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout}s; see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
