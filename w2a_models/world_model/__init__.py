"""The frozen video world model: diffusers Cosmos-Predict2 (Cosmos2VideoToWorldPipeline) with
DiT latent taps, tiny-config builder, and Skill-WM chaining.

Time convention (shared with ``w2a_models.chunking``): env step t has frame t (the observation
before action t). The Wan VAE compresses time by 4: latent frame 0 is frame 0 alone, latent frame
j >= 1 covers frames 4j-3 … 4j. A chunk of M env steps starting at frame s = c*M produces the
frames s+1 … s+M, i.e. the latent frames (s/4)+1 … (s+M)/4 of a clip that starts at frame 0, so
M must be a multiple of 4 and each chunk owns L = M/4 latent frames. Clips are conditioned on
their first frame (latent frame 0), the robot's current observation.
"""

from w2a_models.world_model.model import WorldModel, WorldModelConfig, chunk_latents

__all__ = ["WorldModel", "WorldModelConfig", "chunk_latents"]
