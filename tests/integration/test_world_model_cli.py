"""`w2a train-wm` and `w2a wm-eval` end to end on real (few) Meta-World demos, tiny budgets."""

import json
import subprocess
import sys

import pytest

from services.robot_sim.collect import CollectConfig, collect
from services.robot_sim.metaworld_env import SimConfig
from w2a_models.world_model import WorldModel

pytestmark = pytest.mark.sim


def test_train_then_eval_runs_and_loads(tmp_path):
    data = tmp_path / "data"
    collect(data / "push-v3", CollectConfig(sim=SimConfig(task="push-v3", image_size=32), episodes=3),
            progress=False)
    out = tmp_path / "wm"
    run = subprocess.run([sys.executable, "-m", "services.cli", "train-wm", "--data", str(data),
                          "--out", str(out), "--vae-steps", "2", "--dit-steps", "3",
                          "--latent-clips", "8", "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["episodes_train"] == 2 and report["episodes_heldout"] == 1
    model = WorldModel.from_pretrained(out)
    assert model.meta["spec"]["image_size"] == 32
    stats = model.vae.config.latents_mean
    again = subprocess.run([sys.executable, "-m", "services.cli", "train-wm", "--data", str(data),
                            "--out", str(out), "--dit-steps", "2", "--latent-clips", "8", "--resume",
                            "--quiet"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    assert resumed["resumed_from_dit_steps"] == 3
    reloaded = WorldModel.from_pretrained(out)
    assert reloaded.meta["dit_steps_total"] == 5
    assert reloaded.vae.config.latents_mean == stats  # the DiT's input space is kept
    ev = subprocess.run([sys.executable, "-m", "services.cli", "wm-eval", "--model", str(out),
                         "--clips", "2", "--json"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    for key in ("latent_mse_model", "latent_mse_copy_frame", "latent_mse_dataset_mean",
                "latent_mse_wrong_skill", "vae_psnr_db"):
        assert key in result and result[key] == result[key]  # present and not NaN
