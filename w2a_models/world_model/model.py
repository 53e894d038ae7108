"""WorldModel: encode real clips and generate clips, both to per-latent-frame features.

The diffusers ``Cosmos2VideoToWorldPipeline`` samples clips (with one change: only the
conditioning frames are VAE-encoded, see ``pipeline.py``), so a real Cosmos-Predict2 checkpoint
directory works as well as the tiny one built here. Two feature kinds
(``WorldModelConfig.features``), each [T_lat, D] per clip:

- ``dit_pooled``: the hidden states of ``transformer.transformer_blocks[tap_block]`` (a forward
  hook), mean-pooled over the spatial tokens of each latent frame, from one DiT forward at a
  small noise level ``tap_sigma``. Pooling keeps *what* is in the frame and loses *where*.
- ``latent_map``: the clean (normalised) VAE latents of each latent frame kept spatial,
  flattened channel-major to D = z * h * w; a spatial video adapter unflattens them. This is
  what the authors' public Stage 1 code feeds its conv encoder (the x0 latents, not pooled DiT
  states): where the arm and the object are survives.

Real clips (``encode``) and generated clips (``generate``: sample, then the same read-out of the
clean sampled latents) always go through the identical read-out, so their features share a space.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from w2a_models.world_model.builder import W2A_CONFIG


@dataclass(frozen=True)
class WorldModelConfig:
    tap_block: int = -2  # which transformer block to tap (negative: from the end)
    tap_sigma: float = 0.05  # noise level of the tapping forward
    tap_seed: int = 0  # the tap's noise is fixed: features are a function of the clip alone
    num_inference_steps: int = 2  # measured: see services/world_model/README.md
    guidance_scale: float = 1.0  # > 1 enables classifier-free guidance on the skill text
    fps: int = 16
    device: str = "cpu"
    features: str = "dit_pooled"  # or "latent_map" (see the module docstring)

    def __post_init__(self) -> None:
        if self.features not in FEATURE_KINDS:
            raise ValueError(f"features must be one of {FEATURE_KINDS}, got {self.features!r}")


FEATURE_KINDS = ("dit_pooled", "latent_map")


class NoOpSafetyChecker(nn.Module):
    """Stands in for Cosmos Guardrail (not installable here); the pipeline requires the object
    and reads its ``device``/``dtype``. Deployments that need the guardrail pass the real one."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, video):
        return video


def chunk_latents(features: np.ndarray, chunk_size: int, frames_per_latent: int = 4) -> np.ndarray:
    """[T_lat, D] per-latent-frame features of a clip from frame 0 -> [C, L, D] chunk latents.

    Chunk c (env steps c*M … c*M+M-1) owns latent frames c*L+1 … c*L+L with L = M/4: the frames
    its actions produce (see the package docstring)."""
    if chunk_size % frames_per_latent:
        raise ValueError(f"chunk_size {chunk_size} must be a multiple of {frames_per_latent}")
    per_chunk = chunk_size // frames_per_latent
    usable = (features.shape[0] - 1) // per_chunk
    if usable <= 0:
        return np.zeros((0, per_chunk, features.shape[-1]), dtype=features.dtype)
    return features[1 : 1 + usable * per_chunk].reshape(usable, per_chunk, features.shape[-1])


@dataclass
class Generation:
    features: np.ndarray  # [T_lat, D] per latent frame (frame 0 = the conditioning frame)
    video: np.ndarray | None = None  # uint8 [T, H, W, 3] when decoded
    latents: torch.Tensor | None = field(default=None, repr=False)  # clean normalised latents


class WorldModel:
    def __init__(self, vae, transformer, scheduler, config: WorldModelConfig = WorldModelConfig(),
                 text_encoder=None, tokenizer=None, sentence_encoder=None) -> None:
        from w2a_models.world_model.pipeline import ConditionedVideoToWorldPipeline

        self.config = config
        self.pipe = ConditionedVideoToWorldPipeline(
            text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
            scheduler=scheduler, safety_checker=NoOpSafetyChecker())
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(config.device)
        self.vae, self.transformer = vae.eval(), transformer.eval()
        self.uses_t5 = text_encoder is not None
        self._sentence_encoder = sentence_encoder
        self.temporal_factor = self.pipe.vae_scale_factor_temporal
        self.spatial_factor = self.pipe.vae_scale_factor_spatial
        blocks = self.transformer.transformer_blocks
        self.tap_index = config.tap_block % len(blocks)
        # width of dit_pooled features; latent_map features are z * h * w (depend on the image size)
        self.feature_dim = self.transformer.config.num_attention_heads * self.transformer.config.attention_head_dim

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | Path, config: WorldModelConfig = WorldModelConfig(),
                        sentence_encoder=None) -> WorldModel:
        from diffusers import AutoencoderKLWan, CosmosTransformer3DModel, FlowMatchEulerDiscreteScheduler

        directory = Path(directory)
        if not (directory / "transformer").is_dir():
            raise FileNotFoundError(f"{directory}: not a world-model directory (no transformer/)")
        vae = AutoencoderKLWan.from_pretrained(directory / "vae")
        transformer = CosmosTransformer3DModel.from_pretrained(directory / "transformer")
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(directory / "scheduler")
        text_encoder = tokenizer = None
        if (directory / "text_encoder").is_dir():  # a real Cosmos-Predict2 checkpoint: T5 prompts
            from transformers import T5EncoderModel, T5TokenizerFast

            text_encoder = T5EncoderModel.from_pretrained(directory / "text_encoder")
            tokenizer = T5TokenizerFast.from_pretrained(directory / "tokenizer")
        model = cls(vae, transformer, scheduler, config, text_encoder, tokenizer, sentence_encoder)
        meta = directory / W2A_CONFIG
        model.meta = json.loads(meta.read_text()) if meta.exists() else {}
        return model

    @property
    def version(self) -> str:
        return str(getattr(self, "meta", {}).get("version", "0"))

    # -- text ------------------------------------------------------------------------------------

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """[B, 1, text_dim] for the tiny models (MiniLM sentence embedding; '' -> zeros)."""
        if self.uses_t5:
            embeds, _ = self.pipe.encode_prompt(prompt=texts, do_classifier_free_guidance=False,
                                                device=self.config.device)
            return embeds
        if self._sentence_encoder is None:
            from w2a_models.text import shared_encoder

            self._sentence_encoder = shared_encoder()
        out = np.zeros((len(texts), 1, self.transformer.config.text_embed_dim), dtype=np.float32)
        nonempty = [i for i, t in enumerate(texts) if t.strip()]
        if nonempty:
            vectors = self._sentence_encoder.encode([texts[i] for i in nonempty])
            out[nonempty, 0, : vectors.shape[1]] = vectors
        return torch.from_numpy(out).to(self.config.device)

    # -- latents ---------------------------------------------------------------------------------

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, dtype=like.dtype, device=like.device).view(1, cfg.z_dim, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=like.dtype, device=like.device).view(1, cfg.z_dim, 1, 1, 1)
        return mean, std

    @staticmethod
    def video_to_tensor(video: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> float [1, 3, T, H, W] in [-1, 1]."""
        video = np.asarray(video)
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
        x = torch.from_numpy(np.ascontiguousarray(video)).float() / 127.5 - 1.0
        return x.permute(3, 0, 1, 2).unsqueeze(0)

    @torch.no_grad()
    def vae_encode(self, video: np.ndarray) -> torch.Tensor:
        """Normalised clean latents [B, z, T_lat, h, w] of uint8 [T,H,W,3] or [B,T,H,W,3]
        (posterior mode: deterministic)."""
        video = np.asarray(video)
        clips = video[None] if video.ndim == 4 else video
        x = torch.cat([self.video_to_tensor(c) for c in clips]).to(self.config.device)
        latents = self.vae.encode(x).latent_dist.mode()
        mean, std = self._latent_stats(latents)
        return (latents - mean) / std * self.pipe.scheduler.config.sigma_data

    @torch.no_grad()
    def vae_decode(self, latents: torch.Tensor) -> np.ndarray:
        mean, std = self._latent_stats(latents)
        x = self.vae.decode(latents / self.pipe.scheduler.config.sigma_data * std + mean).sample
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x[0].permute(1, 2, 3, 0).cpu().numpy()

    @contextlib.contextmanager
    def _tap(self):
        captured: list[torch.Tensor] = []
        handle = self.transformer.transformer_blocks[self.tap_index].register_forward_hook(
            lambda module, args, output: captured.append(output.detach()))
        try:
            yield captured
        finally:
            handle.remove()

    @torch.no_grad()
    def tap_features_batch(self, latents: torch.Tensor, texts: list[str] | None = None) -> np.ndarray:
        """One DiT forward at noise ``tap_sigma`` (frame 0 as clean conditioning, as in sampling)
        for a batch of latents [B, z, T_lat, h, w] -> [B, T_lat, D], spatially mean-pooled.

        The tap noise comes from ``tap_seed``, never from a request's seed, and the tap text
        defaults to '' (unconditional): a real clip and a generated clip with the same latents
        get the same features, whatever seed or skill produced them. (Per-request tap noise
        alone moved features by ~150x the change a 12-step motion makes.)"""
        texts = [""] * latents.shape[0] if texts is None else list(texts)
        if len(texts) != latents.shape[0]:
            raise ValueError(f"{len(texts)} texts for {latents.shape[0]} clips")
        if self.config.features == "latent_map":  # [B, z, T, h, w] -> [B, T, z*h*w], no DiT
            return latents.permute(0, 2, 1, 3, 4).flatten(2).float().cpu().numpy()
        sigma = self.config.tap_sigma
        t = sigma / (1.0 + sigma)
        generator = torch.Generator(device="cpu").manual_seed(self.config.tap_seed)
        noise = torch.randn(latents.shape[1:], generator=generator).to(latents)  # same per clip
        noisy = (latents + sigma * noise) * (1.0 - t)
        batch, frames = latents.shape[0], latents.shape[2]
        cond = torch.zeros(1, 1, frames, 1, 1, device=latents.device, dtype=latents.dtype)
        cond[:, :, 0] = 1.0
        hidden = cond * latents + (1 - cond) * noisy
        t_cond = 1e-4 / (1 + 1e-4)  # the pipeline's sigma_conditioning
        timestep = (cond * t_cond + (1 - cond) * t).expand(batch, 1, frames, 1, 1)
        mask = cond.expand(batch, 1, frames, latents.shape[3], latents.shape[4])
        padding = latents.new_zeros(1, 1, latents.shape[3] * self.spatial_factor,
                                    latents.shape[4] * self.spatial_factor)
        with self._tap() as captured:
            self.transformer(hidden_states=hidden, timestep=timestep,
                             encoder_hidden_states=self.text_embeddings(texts), fps=self.config.fps,
                             condition_mask=mask, padding_mask=padding, return_dict=False)
        tokens = captured[-1]  # [B, T_lat * h/2 * w/2, D]
        return tokens.view(batch, frames, -1, tokens.shape[-1]).mean(dim=2).float().cpu().numpy()

    def tap_features(self, latents: torch.Tensor, text: str = "") -> np.ndarray:
        return self.tap_features_batch(latents, [text])[0]

    def encode(self, video: np.ndarray, text: str = "") -> np.ndarray:
        """Real clip uint8 [T, H, W, 3] ((T-1) % 4 == 0) -> features [T_lat, D].

        Leave ``text`` empty to get the space ``generate`` features live in."""
        return self.encode_batch(np.asarray(video)[None], [text])[0]

    def encode_batch(self, videos: np.ndarray, texts: list[str] | None = None) -> np.ndarray:
        """Clips uint8 [B, T, H, W, 3] of one shape -> features [B, T_lat, D] in one forward."""
        videos = np.asarray(videos)
        if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"video must be uint8 [T, H, W, 3], got {videos.dtype} {videos.shape[1:]}")
        if videos.shape[1] < 1 or (videos.shape[1] - 1) % self.temporal_factor:
            raise ValueError(f"clip length {videos.shape[1]} must be 1 + a multiple of {self.temporal_factor}")
        latents = self.vae_encode(videos)
        return self.tap_features_batch(latents, texts)

    @torch.no_grad()
    def generate(self, frame: np.ndarray, skill_text: str, num_frames: int = 13, seed: int = 0,
                 decode: bool = False) -> Generation:
        """Sample a clip from ``frame`` and the skill text (``seed`` drives the sampler); tap its
        clean latents exactly like ``encode`` does a real clip (unconditional tap, fixed noise)."""
        return self.generate_batch([frame], [skill_text], num_frames, [seed], decode)[0]

    @torch.no_grad()
    def generate_batch(self, frames: list[np.ndarray], skill_texts: list[str], num_frames: int = 13,
                       seeds: list[int] | None = None, decode: bool = False) -> list[Generation]:
        """``generate`` for several requests of one frame size in one denoising loop.

        Each clip has its own generator (seeded from its own seed) for the VAE posterior draw and
        the initial noise, in the order the one-by-one call draws them, so a clip's result does
        not depend on what it was batched with (equal up to float rounding of batched kernels)."""
        from PIL import Image

        frames = [np.asarray(f) for f in frames]
        seeds = [0] * len(frames) if seeds is None else list(seeds)
        if not frames or len(skill_texts) != len(frames) or len(seeds) != len(frames):
            raise ValueError(f"{len(frames)} frames, {len(skill_texts)} skills and {len(seeds)} seeds "
                             "must be equally many (and at least one)")
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
            if frame.shape != frames[0].shape:
                raise ValueError(f"frames of one batch must share a size: {frame.shape} vs {frames[0].shape}")
        if num_frames < 1 + self.temporal_factor or (num_frames - 1) % self.temporal_factor:
            raise ValueError(f"num_frames must be 1 + a positive multiple of {self.temporal_factor}")
        height, width = frames[0].shape[:2]
        latents = self.pipe(
            image=[Image.fromarray(f) for f in frames], prompt_embeds=self.text_embeddings(list(skill_texts)),
            negative_prompt_embeds=self.text_embeddings([""] * len(frames)),
            height=height, width=width, num_frames=num_frames, fps=self.config.fps,
            num_inference_steps=self.config.num_inference_steps,
            guidance_scale=self.config.guidance_scale, output_type="latent",
            generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds]).frames
        features = self.tap_features_batch(latents)
        return [Generation(features=features[i],
                           video=self.vae_decode(latents[i:i + 1]) if decode else None,
                           latents=latents[i:i + 1]) for i in range(len(frames))]

    def generate_chain(self, frame: np.ndarray, skills: list[str], frames_per_skill: int = 13,
                       seed: int = 0) -> list[Generation]:
        """Skill-WM: one segment per skill, each conditioned on the decoded last frame of the
        previous segment (the first on ``frame``). Every segment's video is decoded."""
        return chain_skills(lambda f, skill, s: self.generate(f, skill, frames_per_skill, s, decode=True),
                            frame, skills, seed)


def chain_skills(generate, frame: np.ndarray, skills: list[str], seed: int = 0) -> list:
    """The Skill-WM loop shared by the in-process model and the service client: segment i is
    ``generate(frame_i, skill_i, seed + i)`` and frame_{i+1} is the last frame of its video."""
    if not skills:
        raise ValueError("generate_chain needs at least one skill")
    segments, current = [], np.asarray(frame)
    for i, skill in enumerate(skills):
        segment = generate(current, skill, seed + i)
        segments.append(segment)
        current = segment.video[-1]
    return segments


def write_video(path: str | Path, video: np.ndarray, fps: int = 8) -> Path:
    """GIF (or MP4 when ``path`` ends in .mp4 and an ffmpeg plugin is present) for people."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, list(np.asarray(video, dtype=np.uint8)), duration=1.0 / fps, loop=0)
    return path
