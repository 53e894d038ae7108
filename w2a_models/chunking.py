"""Chunk-wise windows that pair M video frames with the M actions executed over them.

Time convention (shared with the world model and the episode format): ``frames[t]`` is the
observation *before* ``actions[t]`` is executed. Chunk ``c`` of size M covers env steps
``[c*M, (c+1)*M)``: frames ``c*M … c*M+M-1`` and the same-indexed actions. Windows never cross a
skill-segment boundary when segments are given, so every chunk belongs to exactly one skill.

Trajectory-wise alignment (the paper's weaker ablation) pools all chunks of a demo into one pair,
which lets a model shortcut on task identity instead of dynamics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Alignment = Literal["chunk", "trajectory"]


@dataclass(frozen=True)
class ChunkWindow:
    start: int  # first env step (inclusive)
    end: int  # last env step (exclusive); end - start == chunk_size
    segment: int = 0  # index of the skill segment this chunk lies in


def chunk_windows(
    num_steps: int,
    chunk_size: int,
    stride: int | None = None,
    segments: Sequence[tuple[int, int]] | None = None,
) -> list[ChunkWindow]:
    """Full windows of ``chunk_size`` steps; a partial window at the end is dropped.

    With ``segments`` ([start, end) pairs covering the episode), windows are cut inside each
    segment separately and tagged with its index.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    stride = chunk_size if stride is None else stride
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    spans = list(segments) if segments is not None else [(0, num_steps)]
    windows: list[ChunkWindow] = []
    for index, (seg_start, seg_end) in enumerate(spans):
        if not 0 <= seg_start <= seg_end <= num_steps:
            raise ValueError(f"segment {index} = [{seg_start}, {seg_end}) is outside [0, {num_steps})")
        for start in range(seg_start, seg_end - chunk_size + 1, stride):
            windows.append(ChunkWindow(start, start + chunk_size, index))
    return windows


def gather_chunks(array: np.ndarray, windows: Sequence[ChunkWindow]) -> np.ndarray:
    """Stack ``array[w.start:w.end]`` for every window: [T, ...] -> [C, M, ...]."""
    if not windows:
        return np.zeros((0, 0, *array.shape[1:]), dtype=array.dtype)
    return np.stack([array[w.start : w.end] for w in windows])


def trajectory_pool(chunks: np.ndarray) -> np.ndarray:
    """Trajectory-wise pooling for the ablation: mean over the chunk axis, [C, ...] -> [1, ...]."""
    if chunks.shape[0] == 0:
        raise ValueError("cannot pool a trajectory with no chunks")
    return chunks.mean(axis=0, keepdims=True)


def align_pairs(
    video_chunks: np.ndarray, action_chunks: np.ndarray, alignment: Alignment = "chunk"
) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs for one demo: one per chunk, or one pooled pair per trajectory."""
    if video_chunks.shape[0] != action_chunks.shape[0]:
        raise ValueError(
            f"{video_chunks.shape[0]} video chunks but {action_chunks.shape[0]} action chunks"
        )
    if alignment == "chunk":
        return video_chunks, action_chunks
    if alignment == "trajectory":
        return trajectory_pool(video_chunks), trajectory_pool(action_chunks)
    raise ValueError(f"alignment must be 'chunk' or 'trajectory', got {alignment!r}")
