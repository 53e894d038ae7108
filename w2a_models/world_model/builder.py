"""Tiny Cosmos-Predict2-shaped components for CPU, in the diffusers directory layout.

A real Cosmos-Predict2 checkpoint directory has the same layout (``vae/``, ``transformer/``,
``scheduler/``, plus ``text_encoder/`` and ``tokenizer/`` for T5), so code that loads these
loads a real checkpoint unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

W2A_CONFIG = "w2a_world_model.json"


@dataclass(frozen=True)
class TinyWMSpec:
    image_size: int = 64
    vae_base_dim: int = 16
    z_dim: int = 16
    heads: int = 4
    head_dim: int = 32
    layers: int = 4
    text_embed_dim: int = 384  # = MiniLM sentence-embedding width: no projection needed
    max_latent: int = 16


def tiny_components(spec: TinyWMSpec = TinyWMSpec(), seed: int = 0):
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=spec.vae_base_dim, z_dim=spec.z_dim, dim_mult=[1, 2, 2, 2],
                           num_res_blocks=1, temperal_downsample=[False, True, True])
    transformer = CosmosTransformer3DModel(
        in_channels=spec.z_dim + 1, out_channels=spec.z_dim, num_attention_heads=spec.heads,
        attention_head_dim=spec.head_dim, num_layers=spec.layers, mlp_ratio=4.0,
        text_embed_dim=spec.text_embed_dim, adaln_lora_dim=32,
        max_size=(spec.max_latent,) * 3, patch_size=(1, 2, 2), rope_scale=(1.0, 1.0, 1.0),
        concat_padding_mask=False,  # the padding-mask path resizes with torchvision
        extra_pos_embed_type=None)
    scheduler = FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)
    return vae, transformer, scheduler


def save_components(directory: str | Path, vae, transformer, scheduler, w2a_config: dict) -> Path:
    directory = Path(directory)
    vae.save_pretrained(directory / "vae")
    transformer.save_pretrained(directory / "transformer")
    scheduler.save_pretrained(directory / "scheduler")
    (directory / W2A_CONFIG).write_text(json.dumps(w2a_config, indent=1))
    return directory


def build_tiny(directory: str | Path, spec: TinyWMSpec = TinyWMSpec(), seed: int = 0) -> Path:
    """An untrained tiny WM on disk (for tests and as the starting point of ``w2a train-wm``)."""
    vae, transformer, scheduler = tiny_components(spec, seed)
    return save_components(directory, vae, transformer, scheduler,
                           {"spec": asdict(spec), "text": "minilm", "trained_steps": 0})
