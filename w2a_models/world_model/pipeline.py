"""The diffusers Cosmos-Predict2 Video2World pipeline, encoding only what conditions a sample.

``Cosmos2VideoToWorldPipeline.prepare_latents`` pads the conditioning frame(s) with copies of the
last one to the full clip length, VAE-encodes that whole padded video, and then masks every
latent frame but the conditioning ones out of the denoising loop (``cond_indicator``). The Wan
VAE is causal in time, so the conditioning latents do not depend on the padding at all: encoding
the conditioning frames alone gives the same latents for a fraction of the cost. On this CPU,
with the tiny model at 64 px and 9 frames, the padded encode was 76 % of ``wm_generate``'s time.

Everything else (noise, masks, sampling loop, guidance) is the stock pipeline's. One thing
changes: the VAE posterior draw covers fewer latent frames, so the generator is at another state
when the initial noise is drawn and a seed gives another (equally valid) sample than the stock
pipeline would. Batched and single calls still agree: each request keeps its own generator.
"""

from __future__ import annotations

import torch
from diffusers import Cosmos2VideoToWorldPipeline
from diffusers.pipelines.cosmos.pipeline_cosmos2_video2world import retrieve_latents
from diffusers.utils.torch_utils import randn_tensor


class ConditionedVideoToWorldPipeline(Cosmos2VideoToWorldPipeline):
    """``Cosmos2VideoToWorldPipeline`` whose VAE encodes the conditioning frames only."""

    def prepare_latents(self, video, batch_size, num_channels_latents=16, height=704, width=1280,
                        num_frames=93, do_classifier_free_guidance=True, dtype=None, device=None,
                        generator=None, latents=None):
        num_cond_frames = video.size(2)
        if num_cond_frames >= num_frames:  # the clip is all conditioning: nothing is padded
            return super().prepare_latents(video, batch_size, num_channels_latents, height, width,
                                           num_frames, do_classifier_free_guidance, dtype, device,
                                           generator, latents)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"{len(generator)} generators for a batch of {batch_size}")
        temporal = self.vae_scale_factor_temporal
        num_cond_latent_frames = (num_cond_frames - 1) // temporal + 1
        num_latent_frames = (num_frames - 1) // temporal + 1
        generators = generator if isinstance(generator, list) else [generator] * batch_size
        cond = torch.cat([retrieve_latents(self.vae.encode(video[i].unsqueeze(0)), generator=generators[i])
                          for i in range(batch_size)]).to(dtype)
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(device, dtype)
        std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(device, dtype)
        cond = (cond - mean) / std * self.scheduler.config.sigma_data
        # the frames after the conditioning ones are masked out below; repeat the last to fill
        pad = cond[:, :, -1:].expand(-1, -1, num_latent_frames - cond.size(2), -1, -1)
        init_latents = torch.cat([cond, pad], dim=2)

        shape = (batch_size, num_channels_latents, num_latent_frames,
                 height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)
        latents = latents * self.scheduler.config.sigma_max

        padding_shape = (batch_size, 1, *shape[2:])
        ones, zeros = latents.new_ones(padding_shape), latents.new_zeros(padding_shape)
        cond_indicator = latents.new_zeros(1, 1, num_latent_frames, 1, 1)
        cond_indicator[:, :, :num_cond_latent_frames] = 1.0
        cond_mask = cond_indicator * ones + (1 - cond_indicator) * zeros
        uncond_indicator = uncond_mask = None
        if do_classifier_free_guidance:
            uncond_indicator = cond_indicator.clone()
            uncond_mask = uncond_indicator * ones + (1 - uncond_indicator) * zeros
        return latents, init_latents, cond_indicator, uncond_indicator, cond_mask, uncond_mask
