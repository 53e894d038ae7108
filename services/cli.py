"""The ``w2a`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from services.robot_sim.metaworld_env import DEFAULT_ACTION_REPEAT, DEFAULT_CAMERA

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="World2Act: world-model post-training and serving for robot policies.")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def collect(
    task: str | None = typer.Option(None, help="Meta-World v3 task name (default pick-place-v3), or "
                                                  "with --sim libero a task index or name (default 0)."),
    episodes: int = typer.Option(10, min=1, help="Number of episodes to save."),
    out: Path = typer.Option(..., help="Output directory (episodes + index.json)."),
    sim: str = typer.Option("metaworld", help="metaworld | libero"),
    suite: str = typer.Option("libero_object", help="LIBERO suite (--sim libero)."),
    size: int | None = typer.Option(None, min=16, max=512, help="Square image size (default 64, LIBERO 96)."),
    seed: int = typer.Option(0, min=0, help="First simulator seed; episode i uses seed + i."),
    camera: str | None = typer.Option(None, help="Meta-World: 'front' (default) or a Meta-World camera; "
                                                    "LIBERO: agentview (default) or robot0_eye_in_hand."),
    action_repeat: int | None = typer.Option(None, min=1, help=f"Env steps per policy step "
                                                f"(default {DEFAULT_ACTION_REPEAT}, LIBERO 1)."),
    max_steps: int | None = typer.Option(None, min=10, help="Step limit per episode (policy steps; "
                                            "default 200, LIBERO the suite's env-step limit)."),
    keep_failures: bool = typer.Option(False, help="Also save episodes the expert failed."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Roll out scripted experts headless (Meta-World or LIBERO) and save the episodes."""
    if sim == "libero":
        from services.robot_sim.libero_env import LiberoConfig
        from services.robot_sim.libero_experts import collect_libero

        try:
            config = LiberoConfig(suite=suite, task=task if task is not None else 0, image_size=size or 96,
                                  camera=camera or "agentview", max_steps=max_steps,
                                  action_repeat=action_repeat or 1)
            report = collect_libero(out, config, episodes, seed=seed, keep_failures=keep_failures,
                                    progress=not quiet)
        except ValueError as exc:
            _fail(str(exc))
        saved, attempted, failures, name = (report["saved"], report["attempted"], report["failures"],
                                            report["task"])
    elif sim == "metaworld":
        from services.robot_sim.collect import CollectConfig
        from services.robot_sim.collect import collect as run_collect
        from services.robot_sim.metaworld_env import SimConfig

        name = task or "pick-place-v3"
        try:
            config = SimConfig(task=name, image_size=size or 64, camera=camera or DEFAULT_CAMERA,
                               max_steps=max_steps or 200, action_repeat=action_repeat or DEFAULT_ACTION_REPEAT)
            report = run_collect(out, CollectConfig(sim=config, episodes=episodes, seed=seed,
                                                    keep_failures=keep_failures), progress=not quiet)
        except ValueError as exc:
            _fail(str(exc))
        saved, attempted, failures = report.saved, report.attempted, report.failures
    else:
        _fail(f"--sim must be metaworld or libero, got {sim!r}")
    typer.echo(f"saved {saved}/{episodes} {name} episodes to {out} ({attempted} attempted, {failures} failed)")
    if saved < episodes:
        _fail(f"only {saved} successful episodes after {attempted} attempts", 1)


@app.command()
def segment(
    path: Path = typer.Argument(..., help="Episode directory (searched recursively) or .npz file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one list of episodes)."),
) -> None:
    """Split episodes into atomic skills; print the segments and which segmenter was used."""
    from w2a_models.episodes import EpisodeFormatError
    from w2a_models.segmentation import segment_directory

    try:
        results = segment_directory(path)
    except EpisodeFormatError as exc:
        _fail(str(exc))
    if not results:
        _fail(f"no episodes found under {path}")
    if as_json:
        json.dump(results, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    for r in results:
        spans = " | ".join(f"{s['start']}-{s['end']}" for s in r["segments"])
        typer.echo(f"{Path(r['file']).name}: {r['task']} T={r['length']} "
                   f"{r['segmenter']} ({r['reason']}) -> {r['num_segments']} segments [{spans}]")


@app.command()
def demo(
    out: Path | None = typer.Option(None, help="Run directory (default runs/<timestamp>)."),
    profile: str = typer.Option("default", help="tiny (smoke test) | default (<= 15 min) | full (the experiment) "
                                                "| libero | libero-tiny (LIBERO smoke test)."),
    eval_seed_start: int | None = typer.Option(
        None, help="First evaluation seed (>= 100000; default: the profile's). Re-evaluate on "
                   "placements no earlier run used."),
    arms: str | None = typer.Option(
        None, help="Trained arms, comma-separated (default: the profile's): w2a, w2a_pooled_dit, "
                   "w2a_real_future, expert_corrected (the last two are simulator-oracle upper bounds)."),
    reuse: Path | None = typer.Option(
        None, help="An earlier run: borrow its demos, base and world model (refused if the profile "
                   "differs on what they depend on), then its play data and Stage 1 where the "
                   "profile agrees on theirs; the rest runs again."),
) -> None:
    """World2Act end to end: demos, base, WM, Stage 1, live Stage 2 with sim robots, base vs w2a."""
    import time
    from dataclasses import replace

    from services.demo import ARM_MODES, PROFILES, run_demo
    from services.robot_sim.seeds import check_eval_seed

    if profile not in PROFILES:
        _fail(f"--profile must be one of {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    if eval_seed_start is not None:
        try:
            check_eval_seed(eval_seed_start)
        except ValueError as exc:
            _fail(str(exc))
        chosen = replace(chosen, eval_seed_start=eval_seed_start)
    if arms is not None:
        names = tuple(a.strip() for a in arms.split(",") if a.strip())
        unknown = [a for a in names if a not in ARM_MODES]
        if unknown or not names:
            _fail(f"--arms: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(ARM_MODES)}")
        chosen = replace(chosen, arms=names)
    out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    try:
        report = run_demo(out, chosen, reuse=reuse)
    except (RuntimeError, TimeoutError, ValueError) as exc:
        _fail(str(exc), 1)
    typer.echo(f"demo finished in {report['total_seconds'] / 60:.1f} min: {out / 'report.md'}")


serve_app = typer.Typer(no_args_is_help=True, help="Run a service in the foreground.")
app.add_typer(serve_app, name="serve")


@serve_app.command("policy")
def serve_policy(
    host: str | None = typer.Option(None, help="Bind address (W2A_POLICY_HOST)."),
    port: int | None = typer.Option(None, help="gRPC port (W2A_POLICY_PORT, default 50051)."),
    base: Path | None = typer.Option(None, help="TinyVLA checkpoint (W2A_POLICY_BASE__CHECKPOINT)."),
    state_dir: Path | None = typer.Option(None, help="Residual versions and spool (W2A_POLICY_STATE_DIR)."),
) -> None:
    """The gRPC policy server (a_base + a_residual). Other settings: W2A_POLICY_* variables."""
    from pydantic import ValidationError

    from services.policy.app import run_policy_server
    from services.policy.base_settings import TinyVlaBase
    from services.policy.settings import PolicySettings

    overrides = {k: v for k, v in {"host": host, "port": port, "state_dir": state_dir}.items() if v is not None}
    try:
        settings = PolicySettings(**overrides)
        if base is not None:  # --base: a TinyVLA checkpoint, whatever the environment says
            settings = settings.model_copy(update={"base": TinyVlaBase(checkpoint=base)})
    except (ValidationError, ValueError) as exc:
        _fail(f"bad policy settings: {exc}")
    try:
        run_policy_server(settings)
    except ValueError as exc:
        _fail(str(exc))


@serve_app.command("planner")
def serve_planner(
    host: str | None = typer.Option(None, help="Bind address (W2A_PLANNER_HOST)."),
    port: int | None = typer.Option(None, help="HTTP port (W2A_PLANNER_PORT, default 8080)."),
) -> None:
    """The skill planner (FastAPI + uvicorn). Other settings: W2A_PLANNER_* variables."""
    from pydantic import ValidationError

    from services.planner.serve import run_planner
    from services.planner.settings import PlannerSettings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    try:
        settings = PlannerSettings(**overrides)
    except ValidationError as exc:
        _fail(f"bad planner settings: {exc}")
    run_planner(settings)


@serve_app.command("world-model")
def serve_world_model(
    model: Path = typer.Option(..., help="World-model directory (diffusers layout)."),
    host: str = typer.Option("127.0.0.1", help="Bind address for all three Triton endpoints."),
    http_port: int = typer.Option(8000),
    grpc_port: int = typer.Option(8001),
    metrics_port: int = typer.Option(8002),
    workdir: Path = typer.Option(Path("runs/world_model"), help="Backend dir and server log."),
) -> None:
    """Triton (binary from nvidia-pytriton) on services/world_model/model_repository."""
    import signal
    import threading

    from services.world_model.launcher import TritonPorts, TritonServer

    server = TritonServer(model, workdir, TritonPorts(http_port, grpc_port, metrics_port), host=host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        _fail(str(exc))
    typer.echo(f"world model ready: grpc {host}:{grpc_port}, http {host}:{http_port} (log {server.log_file})")
    while not stop.wait(1.0):
        if server.process.poll() is not None:
            _fail(f"tritonserver exited with {server.process.returncode}; see {server.log_file}", 1)
    code = server.stop()
    typer.echo(f"world model stopped (tritonserver exit {code})")


@app.command()
def plan(
    instruction: str = typer.Argument(..., help="The task instruction to decompose."),
    task: str | None = typer.Option(None, help="Simulator task name, if known."),
    max_skills: int = typer.Option(8, min=1, max=16),
    backend: str | None = typer.Option(None, help="rules | openai (default: the server's)."),
    url: str = typer.Option("http://127.0.0.1:8080", help="Planner service URL."),
    local: bool = typer.Option(False, "--local", help="Plan in-process with the rules backend."),
) -> None:
    """Print a skill plan for an instruction (from the planner service, or in-process)."""
    if local:
        from w2a_models.plan_rules import decompose

        skills = [s.model_dump(mode="json") for s in decompose(instruction, task, max_skills)]
        result = {"skills": skills, "backend": "rules", "cached": False}
    else:
        import httpx

        body = {"instruction": instruction, "task": task, "max_skills": max_skills, "backend": backend}
        try:
            response = httpx.post(f"{url.rstrip('/')}/v1/skill-plans",
                                  json={k: v for k, v in body.items() if v is not None}, timeout=60)
        except httpx.HTTPError as exc:
            _fail(f"cannot reach the planner at {url} ({type(exc).__name__}); "
                  "start it with `w2a serve planner` or use --local")
        if response.status_code != 200:
            _fail(f"planner answered {response.status_code}: {response.json().get('detail')}")
        result = response.json()
    typer.echo(json.dumps(result, indent=1))


@app.command("skill-sync")
def skill_sync(
    data: Path = typer.Option(..., help="Episode directory (searched recursively)."),
    as_json: bool = typer.Option(False, "--json"),
    url: str | None = typer.Option(None, help="Planner URL; default: in-process rules backend."),
) -> None:
    """Sync rate: plan each demo's instruction, segment the demo, count one-to-one alignments."""
    from services.planner.sync import measure_sync
    from w2a_models.episodes import EpisodeFormatError

    try:
        report = measure_sync(data, url)
    except (EpisodeFormatError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report))
        return
    for task, row in sorted(report["by_task"].items()):
        typer.echo(f"{task:24s} {row['in_sync']}/{row['episodes']}  sync {row['sync_rate']:.2f}")
    typer.echo(f"overall: {report['sync_rate']:.3f} over {report['episodes']} episodes")


@app.command("train-wm")
def train_wm_cmd(
    data: Path = typer.Option(..., help="Episode directory (from `w2a collect`, 64px)."),
    out: Path = typer.Option(..., help="World-model directory to write (diffusers layout)."),
    vae_steps: int = typer.Option(300, min=1),
    dit_steps: int = typer.Option(1500, min=1),
    latent_clips: int = typer.Option(1500, min=8),
    text_dropout: float = typer.Option(0.2, min=0.0, max=1.0),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="Continue the DiT of the model already in OUT."),
    quiet: bool = typer.Option(False),
) -> None:
    """Train the tiny VAE + DiT on demos with the pipeline's own parameterisation."""
    import torch

    from services.jobs.world_model_train import WMTrainConfig, train_world_model
    from w2a_models.episodes import EpisodeFormatError

    torch.set_num_threads(1)
    cfg = WMTrainConfig(vae_steps=vae_steps, dit_steps=dit_steps, latent_clips=latent_clips,
                        text_dropout=text_dropout, seed=seed)
    try:
        report = train_world_model(data, out, cfg, progress=not quiet, resume=resume)
    except (ValueError, EpisodeFormatError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "log"}))


@app.command("wm-eval")
def wm_eval_cmd(
    model: Path = typer.Option(..., help="World-model directory."),
    data: Path | None = typer.Option(None, help="Held-out episodes (default: those recorded at training)."),
    clips: int = typer.Option(24, min=1),
    seed: int = typer.Option(0),
    guidance: float = typer.Option(1.0, min=1.0, help="Classifier-free guidance scale (1 = off)."),
    steps: int = typer.Option(2, min=1, help="Sampling steps (wm_generate's num_inference_steps; "
                                             "2 measured best here)."),
    features: str = typer.Option("dit_pooled", help="dit_pooled | latent_map (the read-out compared)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generated vs true future chunk latents, against copy-frame, dataset-mean and wrong-skill."""
    import torch

    from services.jobs.world_model_eval import evaluate_world_model

    torch.set_num_threads(1)
    try:
        result = evaluate_world_model(str(model), str(data) if data else None, clips, seed,
                                      guidance_scale=guidance, features=features,
                                      num_inference_steps=steps)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=None if as_json else 1))


@app.command("train-adapters")
def train_adapters_cmd(
    data: Path = typer.Option(..., help="Episode directory (64px demos)."),
    out: Path = typer.Option(..., help="Output directory (checkpoint, eval JSON, loss PNG)."),
    wm_url: str = typer.Option("127.0.0.1:8001", help="World-model service (Triton gRPC)."),
    alignment: str = typer.Option("chunk", help="chunk | trajectory (the paper's ablation)."),
    steps: int = typer.Option(1500, min=1),
    batch_size: int = typer.Option(64, min=2),
    hard_negatives: int = typer.Option(4, min=0),
    chunk_size: int = typer.Option(8, min=4),
    video_encoder: str = typer.Option("temporal", help="temporal (pooled DiT features) | spatial "
                                      "(a world model serving features=latent_map)."),
    same_index_negatives: bool = typer.Option(False, help="Hard negatives at the nearest chunk index of the skill."),
    perturbed_negatives: int = typer.Option(0, min=0, help="Noisy copies of the positive chunk as negatives."),
    perturb_scale: float = typer.Option(0.3, min=0.0, help="Their noise scale."),
    cache_dir: Path = typer.Option(Path("runs/cache/wm_latents"), help="WM latent cache."),
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoint."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Stage 1: align WM chunk latents (from wm_encode) with action chunks; held-out retrieval.

    Data-parallel under `torchrun --nproc-per-node N` (and across nodes): each rank trains on its
    shard of every global batch; rank 0 writes the checkpoint and the evaluation."""
    import torch

    from services.common.distributed import init_from_env, shutdown
    from services.jobs.stage1 import Stage1Config, train_stage1
    from services.jobs.stage1_data import TritonEncoder, build_chunks
    from services.world_model.client import WorldModelClient, WorldModelError
    from w2a_models.episodes import EpisodeFormatError, find_episode_files

    torch.set_num_threads(1)
    if alignment not in ("chunk", "trajectory"):
        _fail("--alignment must be 'chunk' or 'trajectory'")
    ranks = init_from_env()
    try:
        for turn in ("main", "others"):  # rank 0 fills the latent cache, the others then read it
            if (turn == "main") == ranks.main:
                with WorldModelClient(wm_url, timeout=120) as client:
                    client.wait_ready(30)
                    chunks = build_chunks(find_episode_files(data), TritonEncoder(client), chunk_size,
                                          cache_dir, progress=not as_json and ranks.main)
            if ranks.distributed:
                torch.distributed.barrier()
        result = train_stage1(chunks, out, Stage1Config(alignment=alignment, steps=steps,
                              batch_size=batch_size, hard_negatives=hard_negatives, seed=seed,
                              video_encoder=video_encoder, same_index_negatives=same_index_negatives,
                              perturbed_negatives=perturbed_negatives, perturb_scale=perturb_scale),
                              progress=not as_json, resume=resume, ranks=ranks)
    except (WorldModelError, EpisodeFormatError, ValueError) as exc:
        _fail(str(exc))
    finally:
        shutdown(ranks)
    if not ranks.main:
        return
    keys = ("alignment", "v2a_top1_same_skill", "a2v_top1_same_skill", "v2a_top1_all", "recon_mse")
    summary = {k: result[k] for k in keys}
    typer.echo(json.dumps(summary if as_json else result, indent=None if as_json else 1))


@app.command("train-residual")
def train_residual_cmd(
    adapters: Path | None = typer.Option(None, help="Stage 1 checkpoint dir (W2A_TRAINER_ADAPTERS)."),
    out: Path | None = typer.Option(None, help="Residual checkpoint dir (W2A_TRAINER_OUT)."),
    redis_url: str | None = typer.Option(None, help="Rollout Redis (W2A_TRAINER_REDIS_URL)."),
    wm_url: str | None = typer.Option(None, help="World model, Triton gRPC (W2A_TRAINER_WM_URL)."),
    policy_url: str | None = typer.Option(None, help="Policy server (W2A_TRAINER_POLICY_URL)."),
    max_updates: int | None = typer.Option(None, min=1, help="Stop after this many updates."),
) -> None:
    """Stage 2: consume rollouts from Redis, train the residual reward-free, push it live.

    Runs until SIGTERM/Ctrl-C; other settings (token, batch size, push interval, consumer
    name, metrics port): W2A_TRAINER_* variables, see services/trainer/settings.py. Data-parallel:
    `torchrun --nproc-per-node N -m services.cli train-residual` (one residual, N ranks).
    """
    from pydantic import ValidationError

    from services.trainer.residual_app import run_residual_trainer
    from services.trainer.settings import TrainerSettings
    from w2a_models.checkpoints import CheckpointError

    overrides = {k: v for k, v in {"adapters": adapters, "out": out, "redis_url": redis_url,
                                   "wm_url": wm_url, "policy_url": policy_url}.items() if v is not None}
    try:
        settings = TrainerSettings(**overrides)
    except ValidationError as exc:
        _fail(f"bad trainer settings: {exc}")
    try:
        trainer = run_residual_trainer(settings, max_updates=max_updates)
    except (ValueError, CheckpointError) as exc:
        _fail(str(exc))
    pushed = trainer.pusher.pushed_version if trainer.pusher else None  # rank 0 pushes
    typer.echo(json.dumps({"updates": trainer.updates, "pushed_version": pushed, "last": trainer.last_stats}))


@app.command("train-base")
def train_base_cmd(
    data: Path = typer.Option(..., help="Episode directory (from `w2a collect`)."),
    out: Path = typer.Option(..., help="Checkpoint directory to write."),
    steps: int = typer.Option(2000, min=1),
    batch_size: int = typer.Option(64, min=1),
    chunk_size: int = typer.Option(8, min=1, help="Actions per predicted chunk (M)."),
    seed: int = typer.Option(0),
    state_std_floor: float = typer.Option(0.0, min=0.0, help="Smallest state scale (LIBERO: 0.05)."),
    image_shift: int = typer.Option(0, min=0, help="Random-shift augmentation, pixels (LIBERO: 4)."),
    state_noise: float = typer.Option(0.0, min=0.0, help="Noise on the normalised state (LIBERO: 0.1)."),
    labels: str = typer.Option("executed", help="'expert': clone perturbed demos' commanded actions."),
    quiet: bool = typer.Option(False),
) -> None:
    """Train the built-in TinyVLA base policy by behaviour cloning; prints held-out loss."""
    import torch

    from services.jobs.base_bc import BCConfig, train_base
    from w2a_models.base_policy.tiny_vla import TinyVLAConfig
    from w2a_models.episodes import EpisodeFormatError

    torch.set_num_threads(1)
    try:
        report = train_base(data, out, TinyVLAConfig(chunk_size=chunk_size),
                            BCConfig(steps=steps, batch_size=batch_size, seed=seed,
                                     state_std_floor=state_std_floor,
                                     image_shift=image_shift, state_noise=state_noise, labels=labels),
                            progress=not quiet)
    except (ValueError, EpisodeFormatError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "history"}))


@app.command()
def up(
    run_dir: Path = typer.Option(Path("runs/stack"), help="Logs, state file, service data."),
    base: Path = typer.Option(..., help="TinyVLA checkpoint served as the frozen base."),
    world_model: Path | None = typer.Option(None, help="World-model dir to serve with Triton."),
    wm_url: str | None = typer.Option(None, help="External Triton gRPC address instead."),
    adapters: Path | None = typer.Option(None, help="Stage 1 checkpoint: also run the Stage 2 trainer."),
    redis_url: str | None = typer.Option(None, help="External Redis (default: embedded)."),
    policy_port: int = typer.Option(0, help="0 = a free port."),
    planner_port: int = typer.Option(0, help="0 = a free port."),
) -> None:
    """Start Redis, world model, planner, policy server (and trainer) and keep them up until Ctrl-C."""
    import signal
    import threading

    from services.stack import Stack, StackConfig

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(StackConfig(run_dir, base, world_model, wm_url, adapters, redis_url, policy_port,
                              planner_port))
    try:
        stack.start()
    except (RuntimeError, TimeoutError, ValueError) as exc:
        _fail(str(exc), 1)
    for s in stack.services:
        typer.echo(f"{s.name:12s} {s.address}" + (f"  (log {s.log_file})" if s.log_file else ""))
    typer.echo(f"stack up; tokens and pids in {run_dir / 'stack.json'}; Ctrl-C or `w2a down` stops it")
    while not stop.wait(1.0):
        stack.supervise()
    codes = stack.stop()
    typer.echo(f"stack stopped: {json.dumps(codes)}")


@app.command()
def status(
    run_dir: Path = typer.Option(Path("runs/stack")),
    replica: list[str] = typer.Option([], help="A policy replica host:port to ask (repeatable); with "
                                               "--replicas-dns, the fleet instead of a `w2a up` stack."),
    replicas_dns: str = typer.Option("", help="A headless Service name:port: every address it resolves to."),
    token: str = typer.Option("", envvar="W2A_TRAINER_POLICY_TOKEN", help="Token for GetInfo (robot or trainer)."),
) -> None:
    """Health of each service of a running stack and the policy version it serves (JSON); with
    --replica / --replicas-dns, the residual version every policy replica serves (null: unreachable)."""
    if replica or replicas_dns:
        from services.trainer.fleet import resolve_endpoints
        from w2a_client import PolicyClient

        versions = {}
        for endpoint in resolve_endpoints(list(replica), replicas_dns):
            try:
                with PolicyClient(endpoint, token, retries=0, timeout=3) as client:
                    versions[endpoint] = int(client.info().residual_version)
            except Exception:  # noqa: BLE001 - an unreachable replica is reported as null
                versions[endpoint] = None
        in_sync = None not in versions.values() and len(set(versions.values())) == 1
        typer.echo(json.dumps({"replicas": versions, "in_sync": in_sync}, indent=1))
        return
    from services.stack import stack_status

    try:
        typer.echo(json.dumps(stack_status(run_dir), indent=1))
    except FileNotFoundError as exc:
        _fail(str(exc), 1)


@app.command()
def down(run_dir: Path = typer.Option(Path("runs/stack"))) -> None:
    """Stop a stack started by `w2a up` (SIGTERM to its supervisor, which stops each service)."""
    from services.stack import stack_down

    try:
        clean = stack_down(run_dir)
    except FileNotFoundError as exc:
        _fail(str(exc), 1)
    typer.echo("stack stopped" if clean else "supervisor did not stop in time; children signalled")


@app.command("eval")
def eval_cmd(
    task: str = typer.Option(..., help="Meta-World task (e.g. pick-place-v3), or with --sim libero a task "
                                       "index or name of --suite."),
    episodes: int = typer.Option(10, min=1),
    seed: int = typer.Option(100_000, "--eval-seed-start", "--seed",
                             help="First evaluation seed (>= 100000: disjoint from demos/rollouts). LIBERO: "
                                  "seed 100000 + k is the suite's official init state k (k < 50)."),
    arm: str = typer.Option("w2a", help="w2a (base + residual) | base (the server's base only)."),
    target: str | None = typer.Option(None, help="Policy server (default: from --run-dir's stack)."),
    token: str | None = typer.Option(None, envvar="W2A_ROBOT_TOKEN", help="Robot token."),
    run_dir: Path = typer.Option(Path("runs/stack"), help="A `w2a up` stack to evaluate against."),
    robots: int = typer.Option(2, min=1, help="Parallel robot processes."),
    sim: str = typer.Option("metaworld", help="metaworld | libero"),
    suite: str = typer.Option("libero_object", help="LIBERO suite (--sim libero)."),
    max_steps: int | None = typer.Option(None, min=1, help="Step limit per episode in policy steps "
                                            "(default 60; LIBERO: the suite's limit / action repeat)."),
    camera: str | None = typer.Option(None, help="Sim camera the base was trained on (default front; "
                                                    "LIBERO agentview)."),
    action_repeat: int | None = typer.Option(None, min=1, help="Env steps per policy step, as the demos "
                                                f"(default {DEFAULT_ACTION_REPEAT}; LIBERO 1)."),
    image_size: int | None = typer.Option(None, min=16, help="Camera image size, as the demos "
                                                                "(default 64; LIBERO 96)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Success rate (Wilson 95 % interval) of sim robots acting through a running policy server."""
    from services.robot_sim.robot import RobotConfig, run_robots, split_seeds, summarise
    from services.robot_sim.seeds import EVAL_SEEDS_START, check_eval_seed

    if arm not in ("w2a", "base"):
        _fail("--arm must be 'w2a' or 'base'")
    if sim not in ("metaworld", "libero"):
        _fail(f"--sim must be metaworld or libero, got {sim!r}")
    try:
        check_eval_seed(seed)
        if sim == "libero":  # LIBERO's protocol: the suite's official init states, 50 per task
            from services.robot_sim.libero_env import LiberoConfig, resolve_task

            defaults = LiberoConfig(suite=suite, camera=camera or "agentview")
            resolve_task(suite, task)
            if seed + episodes > EVAL_SEEDS_START + 50:
                raise ValueError(f"LIBERO evaluates on the 50 official init states per task: --eval-seed-start "
                                 f"+ --episodes must stay <= {EVAL_SEEDS_START + 50}")
            action_repeat = action_repeat or 1
            max_steps = max_steps or -(-defaults.step_limit // action_repeat)
            camera, image_size = defaults.camera, image_size or 96
    except ValueError as exc:
        _fail(str(exc))
    if target is None or token is None:
        from services.stack import read_state

        try:
            state = read_state(run_dir)
        except FileNotFoundError as exc:
            _fail(f"{exc}; give --target and --token", 1)
        target = target or next(s["address"] for s in state["services"] if s["name"] == "policy")
        token = token or state["robot_token"]
    seeds = list(range(seed, seed + episodes))
    configs = [RobotConfig(f"eval-{arm}-{i}", task, target, token, group, base_only=arm == "base",
                           evaluation=True, max_steps=max_steps or 60, camera=camera or DEFAULT_CAMERA,
                           action_repeat=action_repeat or DEFAULT_ACTION_REPEAT, image_size=image_size or 64,
                           sim=sim, suite=suite)
               for i, group in enumerate(split_seeds(seeds, robots))]
    from services.robot_sim.robot import RobotError

    try:
        results = run_robots(configs)
    except RobotError as exc:
        _fail(str(exc), 1)
    summary = summarise(task, arm, results)
    if sim == "libero":
        summary["suite"] = suite
    keys = ("task", "arm", "episodes", "successes", "success_rate", "ci95", "outcomes",
            "physics_ms_per_step", "render_ms_per_chunk") + (("suite",) if sim == "libero" else ())
    typer.echo(json.dumps({k: summary[k] for k in keys} if as_json else summary,
                          indent=None if as_json else 1))


libero_app = typer.Typer(no_args_is_help=True, help="LIBERO suites: tasks, plans and scripted experts.")
app.add_typer(libero_app, name="libero")


@libero_app.command("tasks")
def libero_tasks(suite: str = typer.Option("libero_object", help="LIBERO suite."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Every task of a suite: index, name, instruction and the rules planner's skills."""
    from services.robot_sim.libero_env import suite_tasks
    from w2a_models.plan_rules import decompose

    try:
        rows = [{"index": t.index, "name": t.name, "instruction": t.instruction,
                 "skills": [s.description for s in decompose(t.instruction)]} for t in suite_tasks(suite)]
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(f"{r['index']:2d}  {r['instruction']}\n    -> " + " | ".join(r["skills"]))


@libero_app.command("experts")
def libero_experts(
    suite: str = typer.Option("libero_object", help="LIBERO suite."),
    tasks: str = typer.Option("all", help="Comma-separated task indices, or 'all'."),
    episodes: int = typer.Option(20, min=1, max=50, help="Episodes per task."),
    on: str = typer.Option("init_states", help="init_states (the official evaluation placements, as the docs' "
                                               "table) | placements (sampled ones, where experts are tuned)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Scripted-expert success per task, without rendering."""
    from services.robot_sim.libero_env import suite_tasks
    from services.robot_sim.libero_experts import measure_experts

    if on not in ("init_states", "placements"):
        _fail("--on must be init_states or placements")
    try:
        indices = [t.index for t in suite_tasks(suite)] if tasks == "all" else [int(t) for t in tasks.split(",")]
        rows = measure_experts(suite, indices, episodes, on, progress=not as_json)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(rows, indent=None if as_json else 1))


diagnose_app = typer.Typer(no_args_is_help=True, help="Link-by-link diagnostics of the World2Act chain (JSON).")
app.add_typer(diagnose_app, name="diagnose")


@diagnose_app.command("scene")
def diagnose_scene(
    tasks: str = typer.Option("pick-place-v3,push-v3", help="Comma-separated Meta-World tasks."),
    camera: str = typer.Option(DEFAULT_CAMERA, help="Camera of the setting under test."),
    size: int = typer.Option(64, min=16, help="Image size of the setting under test."),
    action_repeat: int = typer.Option(DEFAULT_ACTION_REPEAT, min=1, help="Env steps per policy step."),
    episodes: int = typer.Option(10, min=1, help="Expert episodes per task and setting."),
    max_steps: int = typer.Option(200, min=10, help="Policy-step limit per episode."),
    baseline: bool = typer.Option(True, help="Also measure the old setting (corner camera, 64 px, "
                                  "no repeat, 200 steps) for comparison."),
) -> None:
    """How far the hand moves per 8-step chunk in pixels (and VAE cells) under a scene setting."""
    from services.robot_sim.metaworld_env import SimConfig
    from services.robot_sim.scene_probe import measure_chunk_motion

    rows = []
    try:
        for task in [t.strip() for t in tasks.split(",") if t.strip()]:
            configs = [("chosen", SimConfig(task=task, image_size=size, camera=camera,
                                            action_repeat=action_repeat, max_steps=max_steps))]
            if baseline:
                configs.append(("old", SimConfig(task=task, image_size=64, camera="corner",
                                                 action_repeat=1, max_steps=200)))
            for name, cfg in configs:
                rows.append({"setting": name, **measure_chunk_motion(cfg, episodes).as_dict()})
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"chunk_size": 8, "vae_cell_px": 8, "rows": rows}, indent=1))


@diagnose_app.command("links")
def diagnose_links(
    run: Path = typer.Option(..., help="A `w2a demo` run directory (base/, world_model/, stage1_chunk/)."),
    tasks: str = typer.Option("pick-place-v3,push-v3", help="Comma-separated Meta-World tasks."),
    episodes: int = typer.Option(6, min=1, help="Base rollouts per task (on seeds of their own)."),
    max_chunks: int = typer.Option(64, min=2, help="On-policy chunks per task."),
    camera: str = typer.Option(DEFAULT_CAMERA),
    size: int = typer.Option(64, min=16),
    action_repeat: int = typer.Option(DEFAULT_ACTION_REPEAT, min=1),
    max_steps: int = typer.Option(60, min=1, help="Policy-step limit per rollout."),
    features: str | None = typer.Option(None, help="World-model read-out (dit_pooled | latent_map; "
                                           "default: the run's)."),
    adapters: str = typer.Option("stage1_chunk", help="Adapters directory inside the run."),
) -> None:
    """Where the World2Act signal is lost: e_base, e_wm, e_real, e_copy, cos_grad, WM error, retrieval."""
    import torch

    from services.jobs.diagnostics import DiagnoseConfig, diagnose_run

    torch.set_num_threads(1)
    try:
        result = diagnose_run(run, [t.strip() for t in tasks.split(",") if t.strip()],
                              {"camera": camera, "image_size": size, "action_repeat": action_repeat,
                               "max_steps": max_steps},
                              DiagnoseConfig(episodes=episodes, max_chunks=max_chunks),
                              progress=lambda m: typer.echo(m, err=True), features=features,
                              adapters_dir=adapters)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=1))


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks over real servers (JSON output).")
app.add_typer(bench_app, name="bench")


@bench_app.command("policy")
def bench_policy_cmd(
    robots: int = typer.Option(16, min=1, help="Concurrent robots (closed loop)."),
    seconds: float = typer.Option(5.0, min=0.5, help="Seconds per load run (logged and unlogged "
                                  "servers get twice this each, in alternating slices)."),
    image_size: int = typer.Option(64, min=16),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """Latency, batching gain and logging overhead of the policy server on loopback."""
    from services.bench import bench_policy

    result = bench_policy(robots, seconds, image_size,
                          progress=(lambda m: typer.echo(m, err=True)))
    typer.echo(json.dumps(result, indent=None if as_json else 1))


@bench_app.command("weights")
def bench_weights_cmd(
    pushes: int = typer.Option(10, min=1),
    robots: int = typer.Option(4, min=0, help="Robots acting during the pushes."),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """Push-to-live time of residual updates while robots act, and failed acts."""
    from services.bench import bench_weights

    result = bench_weights(pushes, robots, progress=(lambda m: typer.echo(m, err=True)))
    typer.echo(json.dumps(result, indent=None if as_json else 1))


@bench_app.command("world-model")
def bench_world_model_cmd(
    concurrency: int = typer.Option(8, min=1),
    seconds: float = typer.Option(10.0, min=1.0),
    model: Path | None = typer.Option(None, help="World-model dir (default: a tiny one)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """wm_encode and wm_generate throughput: sequential vs concurrent clients sharing dynamic
    batching (generate_* keys: the trainer's call)."""
    from services.bench import bench_world_model

    result = bench_world_model(concurrency, seconds, str(model) if model else None,
                               progress=(lambda m: typer.echo(m, err=True)))
    typer.echo(json.dumps(result, indent=None if as_json else 1))


@bench_app.command("trainer")
def bench_trainer_cmd(
    steps: int = typer.Option(20_000, min=64, help="Rollout steps consumed without WM calls."),
    wm_steps: int = typer.Option(128, min=32, help="Rollout steps consumed with wm_generate."),
    batch_size: int = typer.Option(32, min=2),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Stage 2 consumption from a real Redis: steps/s and updates/s, WM calls excluded/included."""
    from services.bench import bench_trainer

    result = bench_trainer(steps, wm_steps, batch_size, progress=(lambda m: typer.echo(m, err=True)))
    typer.echo(json.dumps(result, indent=None if as_json else 1))


@bench_app.command("sim")
def bench_sim_cmd(
    suite: str = typer.Option("libero_object", help="LIBERO suite."),
    task: int = typer.Option(0, min=0, help="Task index in the suite."),
    image_size: int = typer.Option(64, min=8),
    rounds: int = typer.Option(3, min=1, help="Alternating rounds (medians are reported)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """LIBERO physics ms per step and render ms per frame with multisampling on and off."""
    from services.bench import bench_sim

    try:
        result = bench_sim(suite, task, image_size, rounds, progress=(lambda m: typer.echo(m, err=True)))
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=None if as_json else 1))


@bench_app.command("scale")
def bench_scale_cmd(
    stage1_steps: int = typer.Option(150, min=10, help="Stage 1 steps per configuration."),
    stage1_batch: int = typer.Option(64, min=4, help="Stage 1 global batch (split over the ranks)."),
    stage2_steps: int = typer.Option(320, min=64, help="Rollout steps each Stage 2 configuration consumes."),
    pushes: int = typer.Option(6, min=1, help="Pushes per fan-out run."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Scale-out: Stage 1 with 1 vs 2 torchrun ranks, Stage 2 (1 trainer + 1 world model vs 2 ranks
    + 2), weight push fan-out to 1 vs 3 policy replicas — real processes on loopback."""
    from services.bench.scale import bench_scale

    result = bench_scale(stage1_steps, stage1_batch, stage2_steps, pushes,
                         progress=(lambda m: typer.echo(m, err=True)))
    typer.echo(json.dumps(result, indent=None if as_json else 1))


def main(argv: list[str] | None = None) -> None:
    app(argv)


if __name__ == "__main__":
    main()
