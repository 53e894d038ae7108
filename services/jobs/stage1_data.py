"""Stage 1 data: demos -> skill-labelled chunks -> (WM chunk latents, action chunks), cached.

A chunk starting at frame s covers actions s … s+M-1; its video is the clip frames s … s+M
(the observation it starts from plus the M frames its actions produce), encoded by the world
model; the chunk latents are the clip's latent frames 1 … M/4 (see w2a_models.world_model).
This is the same clip shape Stage 2 asks ``wm_generate`` to imagine from the robot's current
frame, so both stages compare like with like.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from w2a_models.chunking import chunk_windows
from w2a_models.episodes import Episode, read_episode
from w2a_models.plan_rules import decompose
from w2a_models.segmentation import segment_loaded
from w2a_models.skills import align_skills


class ClipEncoder(Protocol):
    version: str

    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 [B, T, H, W, 3] -> features [B, T_lat, D]."""
        ...


class InProcessEncoder:
    """The WorldModel called directly (unit tests and debugging only)."""

    def __init__(self, model) -> None:
        self.model = model
        self.version = f"{model.version}-{model.config.features}"  # the read-out is part of the key

    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        return self.model.encode_batch(clips)


class TritonEncoder:
    """``wm_encode`` over Triton; concurrent requests so the server's dynamic batcher fills up.

    The cache key needs the served model's identity: without one given, it is a fingerprint of
    the features the service returns for a fixed probe clip (other weights, other fingerprint).
    """

    def __init__(self, client, version: str | None = None, concurrency: int = 8) -> None:
        self.client = client
        self.concurrency = concurrency
        self.version = version or self.fingerprint()

    def fingerprint(self) -> str:
        probe = np.random.default_rng(1234).integers(0, 255, (9, 64, 64, 3), dtype=np.uint8)
        feats = np.round(self.client.encode(probe).astype(np.float64), 4)
        return hashlib.sha256(feats.tobytes()).hexdigest()[:12]

    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return np.stack(list(pool.map(self.client.encode, clips)))


@dataclass
class ChunkSet:
    latents: np.ndarray  # float32 [N, L, D]
    actions: np.ndarray  # float32 [N, M, A]
    skill: np.ndarray  # int64 [N]: index into skill_names
    demo: np.ndarray  # int64 [N]: index into demo_names
    skill_names: list[str]
    demo_names: list[str]

    def __len__(self) -> int:
        return len(self.actions)

    def subset(self, mask: np.ndarray) -> ChunkSet:
        return ChunkSet(self.latents[mask], self.actions[mask], self.skill[mask], self.demo[mask],
                        self.skill_names, self.demo_names)


def episode_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


def chunk_skills(episode: Episode, chunk_size: int) -> list[tuple[int, str]]:
    """(start frame, skill text) for every chunk that has its M result frames on disk."""
    texts = [s.description for s in decompose(episode.instruction, episode.task)]
    seg = segment_loaded(episode)
    usable = episode.length - 1  # frame s+M must exist
    aligned = align_skills(texts, seg.segments).in_sync
    # Out of sync (noisy play data, an odd demo), the segments are not trusted for the cuts
    # either: windows then tile the whole episode under the instruction.
    spans = [(s.start, min(s.end, usable)) for s in seg.segments if s.start < usable] if aligned else None
    windows = chunk_windows(usable, chunk_size, segments=spans)
    return [(w.start, texts[w.segment] if aligned else episode.instruction) for w in windows]


def build_chunks(paths: list[Path], encoder: ClipEncoder, chunk_size: int = 8,
                 cache_dir: Path | None = None, progress: bool = True) -> ChunkSet:
    latents, actions, skills, demos = [], [], [], []
    skill_index: dict[str, int] = {}
    for d, path in enumerate(tqdm(paths, desc="wm latents", unit="ep", disable=not progress)):
        episode = read_episode(path)
        chunks = chunk_skills(episode, chunk_size)
        if not chunks:
            continue
        cache = None
        if cache_dir is not None:
            cache = Path(cache_dir) / f"wm-{encoder.version}" / f"{episode_hash(path)}_M{chunk_size}_w2.npy"
        if cache is not None and cache.exists():
            feats = np.load(cache, allow_pickle=False)
        else:
            clips = np.stack([episode.frames[s : s + chunk_size + 1] for s, _ in chunks])
            feats = encoder.encode_clips(clips)[:, 1:]  # drop latent frame 0 (the given frame)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.save(cache, feats.astype(np.float32))
        for (s, text), f in zip(chunks, feats):
            latents.append(f)
            actions.append(episode.actions[s : s + chunk_size])
            skills.append(skill_index.setdefault(f"{episode.task}: {text}", len(skill_index)))
            demos.append(d)
    if not latents:
        raise ValueError("no usable chunks in the given episodes")
    return ChunkSet(np.stack(latents).astype(np.float32), np.stack(actions).astype(np.float32),
                    np.asarray(skills), np.asarray(demos), list(skill_index), [p.name for p in paths])
