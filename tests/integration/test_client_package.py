"""packages/w2a-client installs into a fresh venv without torch and acts against a real server."""

import subprocess
import venv
from pathlib import Path

import pytest

from services.policy.server import PolicyServer
from tests.policy_helpers import ROBOT, ServerThread, settings, tiny_base

ROOT = Path(__file__).resolve().parents[2]
ROBOT_SCRIPT = """
import sys
import numpy as np
from w2a_client import PolicyClient
assert "torch" not in sys.modules
with PolicyClient(sys.argv[1], sys.argv[2], retries=0, timeout=20) as client:
    info = client.info()
    frame = np.zeros((info.cameras[0].height, info.cameras[0].width, 3), np.uint8)
    chunk = client.act("fresh-venv-robot", {info.cameras[0].name: frame}, np.zeros(info.state_dim, np.float32),
                       "push the puck")
    assert chunk.actions.shape == (info.chunk_size, info.action_dim), chunk.actions.shape
    client.end_episode("fresh-venv-robot", "e0", 1, success=False)
print("ok", chunk.actions.shape, "torch" in sys.modules)
"""


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A venv with only the client package and its three dependencies (pip's cache makes it quick)."""
    env_dir = tmp_path_factory.mktemp("client-venv")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT / "packages" / "w2a-client")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return python


def test_the_client_package_needs_no_torch_and_acts_against_a_real_server(client_venv, tmp_path):
    listed = subprocess.run([str(client_venv), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, timeout=60).stdout.lower()
    assert "w2a-client" in listed and "torch" not in listed
    base = tiny_base()
    with ServerThread(PolicyServer(settings(tmp_path), base)) as srv:
        out = subprocess.run([str(client_venv), "-c", ROBOT_SCRIPT, srv.target, ROBOT], capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"ok ({base.spec.chunk_size}, {base.spec.action_dim}) False"
