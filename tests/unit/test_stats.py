import math

import pytest

from w2a_models.stats import mcnemar_exact, paired_comparison


def test_mcnemar_matches_a_hand_computed_sign_test():
    # 11 seeds gained, 0 lost: both tails of Binomial(11, 1/2) at the extremes, 2 / 2**11
    assert mcnemar_exact(11, 0) == pytest.approx(2 / 2 ** 11)
    # 7 gained, 2 lost: 2 * P(X <= 2), X ~ Binomial(9, 1/2) = 2 * (1 + 9 + 36) / 512
    assert mcnemar_exact(7, 2) == pytest.approx(2 * 46 / 512)
    assert mcnemar_exact(2, 7) == mcnemar_exact(7, 2)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0  # capped, never above 1
    with pytest.raises(ValueError, match="discordant counts must be >= 0"):
        mcnemar_exact(-1, 3)


def test_paired_comparison_uses_only_shared_seeds_and_counts_discordant_pairs():
    control = {1: False, 2: False, 3: True, 4: True, 5: False, 9: True}
    treatment = {1: True, 2: True, 3: True, 4: False, 5: False, 7: True}
    cmp = paired_comparison(control, treatment, resamples=2000)
    assert cmp.episodes == 5  # seeds 7 and 9 ran in one arm only
    assert (cmp.gained, cmp.lost) == (2, 1)
    assert cmp.control_rate == pytest.approx(2 / 5) and cmp.treatment_rate == pytest.approx(3 / 5)
    assert cmp.difference == pytest.approx(0.2)
    assert cmp.p_value == 1.0  # 2 vs 1 discordant: 2 * P(X <= 1), X ~ Bin(3, 1/2) = 2 * 4 / 8
    lo, hi = cmp.difference_ci95
    assert lo <= cmp.difference <= hi


def test_a_large_paired_effect_is_significant_and_no_effect_is_not():
    n = 200
    control = {s: s % 10 < 3 for s in range(n)}  # 30 %
    better = {s: control[s] or s % 10 in (3, 4) for s in range(n)}  # 50 %, never loses a seed
    cmp = paired_comparison(control, better)
    assert cmp.difference == pytest.approx(0.2) and cmp.p_value < 1e-6
    assert cmp.difference_ci95[0] > 0.1
    same = paired_comparison(control, dict(control))
    assert same.p_value == 1.0 and same.difference_ci95 == (0.0, 0.0)
    with pytest.raises(ValueError, match="same seeds"):
        paired_comparison({1: True}, {2: True})
    assert math.isfinite(cmp.p_value)
