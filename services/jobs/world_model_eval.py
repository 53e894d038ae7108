"""How good is the world model at imagining the next chunk? (``w2a wm-eval``)

On held-out episodes, for clips starting at frame s: the true future chunk latents are the
features ``encode`` gives for the real clip; the model's are those ``generate`` gives from frame
s and the segment's skill text. Baselines: the features of a clip that just repeats frame s
(copy-first-frame), the training-set mean feature per latent position (dataset mean), and
generation from the same frame with a *mismatched* skill text (another skill of the task).
Errors are MSE over the generated latent frames (frame 0 is the given observation). Every clip —
real, copied, generated — goes through the same feature tap (unconditional, fixed tap noise), so
only the clip differs, never the text or noise of the tap. The VAE's held-out reconstruction
PSNR is reported too, and ``latent_mse_*_vae`` repeat the comparison on the VAE latents
themselves (no DiT tap).
"""

from __future__ import annotations

import numpy as np

from services.jobs.world_model_train import ClipSource
from w2a_models.episodes import read_episode
from w2a_models.plan_rules import decompose
from w2a_models.world_model import WorldModel, WorldModelConfig


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def evaluate_world_model(model_dir: str, data: str | None = None, clips: int = 24, seed: int = 0,
                         progress=None, guidance_scale: float = 1.0, features: str = "dit_pooled",
                         num_inference_steps: int = WorldModelConfig.num_inference_steps) -> dict:
    """``num_inference_steps``: the sampler's steps (the cost/quality knob of ``wm_generate``);
    the result carries the sampling time per generated clip."""
    import time

    wm = WorldModel.from_pretrained(model_dir, WorldModelConfig(guidance_scale=guidance_scale,
                                                                features=features,
                                                                num_inference_steps=num_inference_steps))
    meta = getattr(wm, "meta", {})
    if data is None:
        paths = meta.get("episodes_heldout") or []
        if not paths:
            raise ValueError("no held-out episodes recorded in the model; pass --data")
    else:
        from w2a_models.episodes import find_episode_files

        paths = [str(p) for p in find_episode_files(data)]
    source = ClipSource.from_episodes([read_episode(p) for p in paths])
    rng = np.random.default_rng(seed)
    frames = int(meta.get("train", {}).get("clip_frames", 13))

    samples = [source.sample(rng, frames) for _ in range(clips)]
    true_latents = wm.vae_encode(np.stack([s[0] for s in samples]))
    copy_latents = wm.vae_encode(np.stack([np.repeat(s[0][:1], frames, 0) for s in samples]))
    truths = wm.tap_features_batch(true_latents)
    copies = wm.tap_features_batch(copy_latents)
    # training-set mean feature per latent position, from training-distribution clips
    train_like = np.stack([source.sample(rng, frames)[0] for _ in range(clips)])
    mean_feature = wm.encode_batch(train_like).mean(axis=0, keepdims=True)

    err = {"model": [], "copy": [], "mean": [], "wrong": []}
    vae_err = {"model": [], "copy": []}
    psnr = []
    generate_s = 0.0
    for i, (clip, skill, e, _) in enumerate(samples):
        ep = source.episodes[e]
        started = time.perf_counter()
        generated = wm.generate(clip[0], skill, frames, seed + i)
        generate_s += time.perf_counter() - started
        right = generated.features
        options = [s.description for s in decompose(ep.instruction, ep.task)]
        wrong_skill = next((o for o in options if o != skill), "stay still")
        wrong = wm.generate(clip[0], wrong_skill, frames, seed + i).features
        target = truths[i][1:]
        err["model"].append(np.mean((right[1:] - target) ** 2))
        err["wrong"].append(np.mean((wrong[1:] - target) ** 2))
        err["copy"].append(np.mean((copies[i][1:] - target) ** 2))
        err["mean"].append(np.mean((mean_feature[0][1:] - target) ** 2))
        true_lat = true_latents[i : i + 1, :, 1:]
        vae_err["model"].append(float(((generated.latents[:, :, 1:] - true_lat) ** 2).mean()))
        vae_err["copy"].append(float(((copy_latents[i : i + 1, :, 1:] - true_lat) ** 2).mean()))
        psnr.append(_psnr(wm.vae_decode(true_latents[i : i + 1]), clip))
        if progress:
            progress(i + 1, clips)
    result = {f"latent_mse_{k}": float(np.mean(v)) for k, v in
              {"model": err["model"], "copy_frame": err["copy"], "dataset_mean": err["mean"],
               "wrong_skill": err["wrong"]}.items()}
    result["vae_psnr_db"] = float(np.mean(psnr))
    result["latent_mse_model_vae"] = float(np.mean(vae_err["model"]))
    result["latent_mse_copy_frame_vae"] = float(np.mean(vae_err["copy"]))
    result["clips"] = clips
    result["guidance_scale"] = guidance_scale
    result["num_inference_steps"] = num_inference_steps
    result["generate_ms_per_clip"] = 1e3 * generate_s / clips
    result["wrong_over_right"] = result["latent_mse_wrong_skill"] / max(result["latent_mse_model"], 1e-12)
    # paired: how often the right skill beats the wrong one on the same clip and seed
    result["right_beats_wrong_frac"] = float(np.mean(np.array(err["model"]) < np.array(err["wrong"])))
    return result
