import numpy as np
import pytest

from w2a_models.world_model import WorldModel, chunk_latents
from w2a_models.world_model.builder import build_tiny


@pytest.fixture(scope="module")
def wm(tmp_path_factory):
    return WorldModel.from_pretrained(build_tiny(tmp_path_factory.mktemp("wm") / "tiny"))


def _clip(n=13, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)


def test_chunk_latents_follow_the_frame_convention():
    feats = np.arange(7)[:, None] * np.ones((7, 3))  # latent frames 0..6
    chunks = chunk_latents(feats, chunk_size=8)  # L = 2 latent frames per chunk
    assert chunks.shape == (3, 2, 3)
    np.testing.assert_array_equal(chunks[:, :, 0], [[1, 2], [3, 4], [5, 6]])
    with pytest.raises(ValueError, match="must be a multiple of"):
        chunk_latents(feats, chunk_size=6)


def test_encode_shapes_and_determinism(wm):
    clip = _clip()
    feats = wm.encode(clip)
    assert feats.shape == (4, wm.feature_dim) and np.isfinite(feats).all()
    np.testing.assert_allclose(feats, wm.encode(clip), atol=1e-6)
    assert not np.allclose(feats, wm.encode(_clip(seed=1)))
    with pytest.raises(ValueError, match="1 \\+ a multiple of 4"):
        wm.encode(clip[:12])
    with pytest.raises(ValueError, match="uint8"):
        wm.encode(clip.astype(np.float32))


def test_generate_is_seeded_and_reads_the_skill(wm):
    frame = _clip()[0]
    a = wm.generate(frame, "push the puck to the goal", 9, seed=3)
    b = wm.generate(frame, "push the puck to the goal", 9, seed=3)
    assert a.features.shape == (3, wm.feature_dim)
    np.testing.assert_allclose(a.features, b.features, atol=1e-6)
    assert not np.allclose(a.features, wm.generate(frame, "push the puck to the goal", 9, seed=4).features)
    assert not np.allclose(a.features, wm.generate(frame, "open the door", 9, seed=3).features)
    with pytest.raises(ValueError, match="num_frames"):
        wm.generate(frame, "x", 10)


def test_generated_and_real_clips_share_one_tap(wm):
    """Generated features are the tap of the generated latents exactly as a real clip's would be:
    neither the request's seed nor its skill text reaches the tap."""
    frame = _clip()[0]
    gen = wm.generate(frame, "push the puck to the goal", 9, seed=3)
    np.testing.assert_allclose(gen.features, wm.tap_features(gen.latents), atol=1e-6)
    clip = _clip(9)
    np.testing.assert_allclose(wm.encode(clip), wm.tap_features(wm.vae_encode(clip)), atol=1e-6)


def test_chain_conditions_each_segment_on_the_previous_last_frame(wm, monkeypatch):
    seen = []
    original = wm.pipe.__call__

    def spy(*args, **kwargs):
        seen.append(np.asarray(kwargs["image"][0]))  # one request: a list of one image
        return original(*args, **kwargs)

    monkeypatch.setattr(type(wm.pipe), "__call__", lambda self, *a, **k: spy(*a, **k))
    frame = _clip()[0]
    segments = wm.generate_chain(frame, ["reach the puck", "grasp the puck", "lift the puck"], 9)
    assert len(segments) == 3 and all(s.video.shape == (9, 64, 64, 3) for s in segments)
    np.testing.assert_array_equal(seen[0], frame)
    for i in (1, 2):
        np.testing.assert_array_equal(seen[i], segments[i - 1].video[-1])


def test_latent_map_features_are_the_clean_latents_kept_spatial(tmp_path):
    from w2a_models.world_model import WorldModelConfig

    wm = WorldModel.from_pretrained(build_tiny(tmp_path / "tiny"), WorldModelConfig(features="latent_map"))
    clip = _clip(9)
    feats = wm.encode(clip)
    latents = wm.vae_encode(clip)  # [1, z, T_lat, h, w]
    z, t, h, w = latents.shape[1:]
    assert feats.shape == (t, z * h * w)
    np.testing.assert_allclose(feats[1], latents[0, :, 1].reshape(-1).numpy(), atol=1e-6)
    gen = wm.generate(clip[0], "push the puck to the goal", 9, seed=3)
    assert gen.features.shape == feats.shape  # the same read-out for generated clips
    np.testing.assert_allclose(gen.features, wm.tap_features(gen.latents), atol=1e-6)
    with pytest.raises(ValueError, match="features must be one of"):
        WorldModelConfig(features="pooled")


def test_conditioning_latents_do_not_depend_on_the_padding_the_stock_pipeline_encodes(wm):
    """Why ConditionedVideoToWorldPipeline may encode the conditioning frame alone: the Wan VAE
    is causal, so the first latent frame of the padded clip equals that of the frame itself."""
    import torch

    frame = _clip()[0]
    padded = np.repeat(frame[None], 9, axis=0)
    with torch.no_grad():
        alone = wm.vae.encode(wm.video_to_tensor(frame[None])).latent_dist.mean
        full = wm.vae.encode(wm.video_to_tensor(padded)).latent_dist.mean
    assert alone.shape[2] == 1 and full.shape[2] == 3
    torch.testing.assert_close(alone, full[:, :, :1], atol=1e-5, rtol=1e-4)


def test_conditioned_pipeline_samples_what_the_stock_pipeline_samples(wm, monkeypatch):
    """With the posterior draw taken out (its mean) and the same initial noise, encoding only the
    conditioning frame changes nothing in the sampled clip."""
    import torch
    from diffusers import Cosmos2VideoToWorldPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from PIL import Image

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    stock = Cosmos2VideoToWorldPipeline(**wm.pipe.components)
    stock.set_progress_bar_config(disable=True)
    frame = _clip()[0]
    noise = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def sample(pipe):
        return pipe(image=[Image.fromarray(frame)], prompt_embeds=wm.text_embeddings(["push the puck"]),
                    negative_prompt_embeds=wm.text_embeddings([""]), height=64, width=64, num_frames=9,
                    num_inference_steps=4, guidance_scale=1.0, output_type="latent",
                    latents=noise.clone()).frames

    assert wm.transformer.config.in_channels - 1 == noise.shape[1]
    torch.testing.assert_close(sample(wm.pipe), sample(stock), atol=1e-5, rtol=1e-4)
