"""One rank of the Stage 1 data-parallel test (run by torchrun, or alone): synthetic chunks,
a few steps, the loss history and the final weights written per rank."""

import json
import sys
from pathlib import Path

import torch

from services.common.distributed import init_from_env, shutdown
from services.jobs.stage1 import Stage1Config, train_stage1
from tests.unit.test_stage1 import synthetic_chunks

if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    ranks = init_from_env("gloo")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 26
    config = Stage1Config(steps=steps, batch_size=32, holdout_fraction=0.25, hard_negatives=2, perturbed_negatives=2,
                          same_index_negatives=True)
    result = train_stage1(synthetic_chunks(), out / "job", config, progress=False, ranks=ranks)
    history = result.get("history") or json.loads((out / "job" / "stage1_history.json").read_text())
    (out / f"rank{ranks.rank}.json").write_text(json.dumps({"world": ranks.world, "history": history}))
    shutdown(ranks)
