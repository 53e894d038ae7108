"""A torchrun restart after kill -9 builds a fresh gloo group (issue 21): torchrun hands every
attempt the same store without a per-attempt prefix, so without ``attempt_store`` the restarted
ranks read the dead attempt's gloo addresses and fail (``connectFullMesh ... Connection refused``,
every time in this two-rank setup)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import os, time
import torch.distributed as dist
from services.common.distributed import init_from_env, shutdown
attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
ranks = init_from_env()
dist.barrier()
if attempt == "0" and ranks.rank == 1:
    os.kill(os.getpid(), 9)
time.sleep(2 if attempt == "0" else 0)  # rank 0 of attempt 0 is stopped by torchrun meanwhile
shutdown(ranks)
print(f"attempt {attempt} rank {ranks.rank} done", flush=True)
"""


def test_the_group_torchrun_restarts_after_a_kill_9_connects(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "--max-restarts=1", "--monitor-interval=0.2", str(script)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "attempt 1 rank 0 done" in out and "attempt 1 rank 1 done" in out, out[-3000:]
    assert "connectFullMesh" not in out
