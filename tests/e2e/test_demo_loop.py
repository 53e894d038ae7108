"""The whole loop on tiny settings: `w2a demo --profile tiny` brings the real stack up, sim robots
act through gRPC, rollouts reach Redis, the trainer's pushes are accepted, a report is written;
then `w2a up` / `status` / `down` on the trained base leave no process behind."""

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.sim]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours still "exists": check its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _w2a(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_tiny_demo_then_up_status_down(tmp_path):
    run = tmp_path / "demo"
    done = _w2a("demo", "--profile", "tiny", "--out", str(run), timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert (run / "report.md").read_text().startswith("# World2Act demo report")
    assert report["stage2"]["stream_entries"] > 0  # rollouts reached Redis
    assert report["stage2"]["final_policy_version"] >= 1  # a push was accepted
    assert {e["arm"] for e in report["evaluation"]} == {"base", "w2a", "w2a_pooled_dit", "expert_corrected"}
    # spatial read-out for w2a, the pooled-DiT ablation through its own Triton read-out and adapters
    assert {"chunk", "trajectory", "pooled_dit"} <= set(report["stage1"])
    # play data (the base with exploration offsets) joined the demos in Stage 1
    assert report["play"]["push-v3"]["episodes"] == 1 and len(list((run / "play").rglob("*.npz"))) == 1
    assert report["stage1"]["chunk"]["train_pairs"] > 0
    assert report["stage2_arms"]["w2a_pooled_dit"]["updates"] >= 1
    upper = report["stage2_arms"]["expert_corrected"]  # the oracle path, end to end
    assert upper["mode"] == "expert_corrected" and upper["updates"] >= 1 and upper["final_policy_version"] >= 1
    assert set(report["paired"]) == {"push-v3"} and 0.0 <= report["paired"]["push-v3"]["p_value"] <= 1.0
    assert all(0.0 <= e["ci95"][0] <= e["success_rate"] <= e["ci95"][1] <= 1.0 for e in report["evaluation"])
    assert (run / "skill_wm.gif").stat().st_size > 0
    assert not (run / "stack" / "stack.json").exists()  # the demo's stack is down

    diag = _w2a("diagnose", "links", "--run", str(run), "--tasks", "push-v3", "--episodes", "1",
                "--max-chunks", "4", "--max-steps", "40", timeout=600)
    assert diag.returncode == 0, diag.stderr[-3000:]
    links = json.loads(diag.stdout)["tasks"]["push-v3"]
    assert links["chunks"] >= 2 and links["e_base"] > 0 and -1 <= links["cos_grad_wm"] <= 1

    stack_dir = tmp_path / "stack"
    up = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--run-dir", str(stack_dir),
                           "--base", str(run / "base"), "--world-model", str(run / "world_model")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (stack_dir / "stack.json").exists() and time.monotonic() < deadline:
            assert up.poll() is None, up.stdout.read()
            time.sleep(0.5)
        state = json.loads((stack_dir / "stack.json").read_text())
        pids = [s["pid"] for s in state["services"] if s["pid"]]
        status = json.loads(_w2a("status", "--run-dir", str(stack_dir)).stdout)
        assert all(s["ready"] for s in status["services"].values()), status
        assert status["services"]["policy"]["residual_version"] == 0  # a fresh state dir
        down = _w2a("down", "--run-dir", str(stack_dir))
        assert down.returncode == 0 and "stack stopped" in down.stdout, down.stdout + down.stderr
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    time.sleep(0.5)
    assert not [p for p in pids if _alive(p)], "w2a down left processes behind"
