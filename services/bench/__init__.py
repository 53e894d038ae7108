"""Benchmarks, one module per subject (``w2a bench …``, JSON output): the policy server under
robot load (``policy``), weight pushes while serving (``weights``), the world model on Triton
(``world_model``), the Stage 2 trainer on a Redis stream (``trainer``), a simulator's physics
and rendering (``sim``) and scale-out with torchrun
ranks, several world-model servers and policy replicas (``scale``)."""

from services.bench.common import ROBOT, TRAINER, policy_process, policy_server_process, tiny_base
from services.bench.policy import bench_policy
from services.bench.sim import bench_sim
from services.bench.trainer import bench_trainer
from services.bench.weights import bench_weights
from services.bench.world_model import bench_world_model

__all__ = ["ROBOT", "TRAINER", "bench_policy", "bench_sim", "bench_trainer", "bench_weights", "bench_world_model",
           "policy_process", "policy_server_process", "tiny_base"]
