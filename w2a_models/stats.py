"""Statistics for A/B evaluation of robot policies: Wilson intervals and paired tests.

Both arms of an evaluation run on the same seeds (the same object/goal placements), so the
outcomes come in pairs and a paired test is the right one: placements that both arms solve, or
both fail, say nothing about the difference; only the discordant seeds do. McNemar's exact test
is the binomial sign test on those discordant pairs. An unpaired two-proportion test on the same
data would need many more episodes to resolve the same difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def wilson_ci95(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (sane at 0 and n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    z, p = 1.959964, successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # min/max with p: at k = n the upper bound rounds to 0.9999999999999999, below the rate itself
    return (float(max(0.0, min(p, centre - half))), float(min(1.0, max(p, centre + half))))


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    ``gained``: seeds the treatment arm solved and the control did not; ``lost``: the reverse.
    Under the null each discordant pair goes either way with probability 1/2."""
    if gained < 0 or lost < 0:
        raise ValueError(f"discordant counts must be >= 0, got {gained}, {lost}")
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


@dataclass(frozen=True)
class PairedComparison:
    episodes: int  # seeds evaluated by both arms
    control_rate: float
    treatment_rate: float
    gained: int  # treatment succeeded, control failed
    lost: int  # control succeeded, treatment failed
    p_value: float  # exact McNemar, two-sided
    difference_ci95: tuple[float, float]  # paired bootstrap over seeds, treatment - control

    @property
    def difference(self) -> float:
        return self.treatment_rate - self.control_rate

    def as_dict(self) -> dict:
        return {"episodes": self.episodes, "control_rate": self.control_rate,
                "treatment_rate": self.treatment_rate, "difference": self.difference,
                "gained": self.gained, "lost": self.lost, "p_value": self.p_value,
                "difference_ci95": list(self.difference_ci95)}


def paired_comparison(control: dict[int, bool], treatment: dict[int, bool], resamples: int = 10_000,
                      seed: int = 0) -> PairedComparison:
    """Compare two arms on the seeds both ran (``{seed: success}`` each)."""
    common = sorted(set(control) & set(treatment))
    if not common:
        raise ValueError("the two arms share no evaluation seed; a paired test needs the same seeds")
    c = np.array([bool(control[s]) for s in common])
    t = np.array([bool(treatment[s]) for s in common])
    gained, lost = int(np.sum(t & ~c)), int(np.sum(c & ~t))
    diff = t.astype(np.float64) - c.astype(np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return PairedComparison(len(common), float(c.mean()), float(t.mean()), gained, lost,
                            mcnemar_exact(gained, lost), (float(lo), float(hi)))
