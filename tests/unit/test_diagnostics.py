"""The diagnostics' figures on constructed cases where the right answer is known."""

from types import SimpleNamespace

import numpy as np
from torch import nn

from services.jobs.diagnostics import DiagnoseConfig, OnPolicyChunk, diagnose_chunks

M, A = 8, 4


class PerfectAdapters(nn.Module):
    """Video latents carry the expert chunk itself; B_a and the decoder are the identity."""

    def __init__(self):
        super().__init__()
        self.video = lambda lat: lat.flatten(1)[:, : M * A]
        self.action = lambda act: act.flatten(1)
        self.decoder = lambda z: z.view(-1, M, A)


class FakeWorldModel:
    """encode: the latents of a future are the chunk written into its first frame's pixels."""

    def __init__(self):
        self.table, self.generated = {}, {}

    def encode_batch(self, videos):
        return np.stack([self.table.get(v.tobytes()[:64], np.zeros((3, M * A), np.float32)) for v in videos])

    def generate(self, frame, skill, frames, seed):
        return SimpleNamespace(features=self.generated[frame.tobytes()])


def test_links_report_where_the_signal_is():
    rng = np.random.default_rng(0)
    chunks, wm = [], FakeWorldModel()
    for _ in range(12):
        frame = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        expert = rng.uniform(-0.8, 0.8, (M, A)).astype(np.float32)
        base = (expert + rng.normal(0, 0.4, (M, A))).astype(np.float32)
        future = rng.integers(0, 255, (M + 1, 16, 16, 3), dtype=np.uint8)
        wm.table[future.tobytes()[:64]] = np.stack([np.zeros(M * A), expert.ravel(), expert.ravel()]).astype(np.float32)
        # the imagined future carries nothing (zeros): a world model without signal
        wm.generated[frame.tobytes()] = np.zeros((2, M * A), np.float32)
        chunks.append(OnPolicyChunk("t", frame, "skill", np.zeros(3, np.float32), base, expert, future))
    out = diagnose_chunks(chunks, wm, PerfectAdapters(), DiagnoseConfig(batch=6, perturb_scale=0.3))
    assert out["chunks"] == 12
    # the real future decodes to a* exactly; the empty imagination decodes to 0
    assert out["e_real"] < 1e-6 < out["e_base"]
    assert out["frac_e_real_below_e_base"] == 1.0
    # the InfoNCE gradient at a_base points toward a* when the video carries a*
    assert out["cos_grad_real"] > 0.2
    assert out["retrieval_top1_real"] > 0.9 and out["retrieval_chance"] == 0.1
    assert out["wm_feature_mse"] > 0.0
    assert len(out["correction_abs_median"]) == A
