"""Seed ranges, disjoint by construction: a seed fixes a Meta-World object/goal placement, so
demos, rollouts and evaluation must never share one (evaluating on a training placement would
measure memory, not skill)."""

DEMO_SEEDS_START = 0  # expert demos (`w2a collect`, `w2a demo`): 0 … 9_999
ROLLOUT_SEEDS_START = 10_000  # Stage 2 rollouts by sim robots: 10_000 … 99_999
EVAL_SEEDS_START = 100_000  # evaluation (`w2a eval`): 100_000 and up


def check_eval_seed(seed: int) -> None:
    if seed < EVAL_SEEDS_START:
        raise ValueError(f"evaluation seeds start at {EVAL_SEEDS_START} (below are demo and rollout "
                         f"placements); got {seed}")
