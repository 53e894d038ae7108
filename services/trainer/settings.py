"""Stage 2 trainer settings (environment prefix ``W2A_TRAINER_``)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.streams import DEAD_LETTER_STREAM, ROLLOUT_STREAM

if TYPE_CHECKING:  # the settings module stays import-light (no torch): the configs import lazily
    from services.trainer.residual_trainer import ResidualTrainerConfig
    from services.trainer.rollout_stream import StreamConfig


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="W2A_TRAINER_", extra="ignore")

    # where the data comes from and where the weights go
    redis_url: str | None = None  # None: W2A_REDIS_URL; there is no embedded default (data lives there)
    stream: str = ROLLOUT_STREAM
    group: str = "trainer"
    consumer: str = Field(default_factory=socket.gethostname)  # unique per trainer; torchrun: one value on all nodes
    dead_letter_stream: str = DEAD_LETTER_STREAM
    claim_idle_ms: int = Field(60_000, ge=0)
    max_deliveries: int = Field(5, ge=1)
    wm_url: str = "127.0.0.1:8001"  # Triton gRPC of the world model; several "a:8001,b:8001": balanced here
    wm_dns: str = ""  # a headless Service "name:port": every address it resolves to at start, instead of wm_url
    targets: Literal["world_model", "table"] = "world_model"  # table: fixed latents, fault tests only
    # world_model = World2Act. Upper bounds (need sim robots with an oracle, never the headline):
    # expert_corrected regresses a* - a_base; real_future encodes the expert's rendered future.
    mode: Literal["world_model", "expert_corrected", "real_future"] = "world_model"
    policy_url: str = "127.0.0.1:50051"  # one replica (its admin port when it has one)
    # a fleet (issue 21): every replica gets every version; endpoints listed and/or a headless
    # Service's "name:port" resolved every fleet_every_s. Either set: policy_url is not used.
    policy_urls: list[str] = []
    policy_dns: str = ""
    fleet_every_s: float = Field(5.0, gt=0)
    policy_token: SecretStr = SecretStr("")  # the policy server's trainer token
    policy_root_cert: Path | None = None  # TLS to the policy server when set

    # models
    adapters: Path | None = None  # Stage 1 checkpoint directory (frozen B_v, B_a)
    out: Path = Path("runs/trainer")  # checkpoint directory of the residual
    camera: str = ""  # which logged camera the world model sees ("" = the record's only camera)
    residual_hidden: int = Field(256, ge=1)
    residual_layers: int = Field(2, ge=1)
    residual_scale: float = Field(0.2, gt=0)
    residual_dims: list[int] = []  # action dimensions the residual may move ([] = all)

    # optimisation
    batch_size: int = Field(32, ge=2)  # chunks per update (in-batch negatives)
    lr: float = Field(1e-4, gt=0)
    steps_per_batch: int = Field(1, ge=1)  # optimizer steps on each batch (targets fetched once)
    replay_batch: int = Field(0, ge=0)  # earlier chunks mixed into every step (0 = no replay)
    replay_capacity: int = Field(20_000, ge=0)  # chunks (and their targets) the replay keeps
    pipeline: bool = True  # fetch the next batch's targets while the current update runs
    temperature: float = Field(0.07, gt=0)
    residual_l2: float = Field(0.01, ge=0)
    local_negatives: int = Field(0, ge=0)  # noisy copies of a_final as negatives of their row
    local_noise: float = Field(0.1, gt=0)  # their standard deviation
    base_negative: bool = False  # a_base as a negative of its own row
    max_wait_s: float = Field(5.0, ge=0)  # train on a partial batch after this long without data
    checkpoint_every: int = Field(1, ge=1)  # updates per checkpoint (acks follow checkpoints)
    push_every: int = Field(10, ge=1)  # updates per push to the policy server
    wm_seed: int = 0  # seed of the imagined clips (fixed: same input, same target)
    wm_concurrency: int = Field(8, ge=1)  # concurrent wm_generate calls (Triton batches them)
    seed: int = 0

    metrics_port: int = Field(9102, ge=0, le=65535)  # 0 = no metrics endpoint
    metrics_host: str = "127.0.0.1"

    # -- the dataclasses the trainer's parts take ----------------------------------------------

    def resolved_redis_url(self) -> str:
        from services.common.settings import SharedSettings

        url = SharedSettings().redis_for(self.redis_url)
        if not url:
            raise ValueError("set W2A_TRAINER_REDIS_URL (or W2A_REDIS_URL) to the Redis the policy "
                             "server logs rollouts to")
        return url

    def trainer_config(self) -> ResidualTrainerConfig:
        from services.trainer.residual_trainer import ResidualTrainerConfig
        from services.trainer.stage2 import Stage2Config

        return ResidualTrainerConfig(
            camera=self.camera, batch_size=self.batch_size, max_wait_s=self.max_wait_s,
            checkpoint_every=self.checkpoint_every, push_every=self.push_every,
            residual_hidden=self.residual_hidden, residual_layers=self.residual_layers,
            residual_scale=self.residual_scale, residual_dims=tuple(self.residual_dims) or None,
            seed=self.seed, mode=self.mode,
            steps_per_batch=self.steps_per_batch, replay_batch=self.replay_batch,
            replay_capacity=self.replay_capacity, pipeline=self.pipeline,
            loss=Stage2Config(temperature=self.temperature, residual_l2=self.residual_l2, lr=self.lr,
                              local_negatives=self.local_negatives, local_noise=self.local_noise,
                              base_negative=self.base_negative))

    def stream_config(self, rank: int = 0, world: int = 1) -> StreamConfig:
        """One process: the consumer as named. Rank ``rank`` of a data-parallel trainer: its own
        stable consumer, and no XAUTOCLAIM (it would take entries another rank still holds)."""
        from services.trainer.rollout_stream import StreamConfig

        return StreamConfig(stream=self.stream, group=self.group,
                            consumer=rank_consumer(self.consumer, rank) if world > 1 else self.consumer,
                            dead_letter=self.dead_letter_stream, batch=max(256, self.batch_size),
                            claim_idle_ms=self.claim_idle_ms, autoclaim=world == 1,
                            max_deliveries=self.max_deliveries)


def rank_consumer(consumer: str, rank: int) -> str:
    """The consumer name of one rank of a data-parallel trainer."""
    return f"{consumer}-r{rank}"


def gone_consumers(names: list[str], consumer: str, world: int) -> list[str]:
    """Of the group's consumer names, those of this trainer that no rank of a ``world``-rank run
    reads: ``<consumer>`` (one process) and ``rank_consumer(consumer, k)`` for k >= world."""
    pattern = re.compile(re.escape(consumer) + r"(?:-r(\d+))?")
    return [name for name in names
            if (m := pattern.fullmatch(name)) and (m.group(1) is None or int(m.group(1)) >= world)]
