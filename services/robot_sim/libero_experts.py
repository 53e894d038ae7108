"""Scripted LIBERO experts: waypoint controllers that read the simulator's object poses.

LIBERO's own demos are human teleoperation from a hub (not reachable here), so demos come from
experts that know where every object is, as Meta-World's do. An expert is a list of waypoints
(end-effector target, gripper command, tolerance) built from the objects' poses when it starts;
the OSC controller is driven toward each by a proportional delta. Privileged state is read here
and in the upper bounds only, never by a policy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from w2a_models.episodes import Episode

OPEN, CLOSE = -1.0, 1.0


@dataclass(frozen=True)
class Waypoint:
    target: np.ndarray  # end-effector position [3]
    gripper: float
    tolerance: float = 0.01  # metres; reached when the hand is this close
    hold: int = 0  # steps to stay once reached (e.g. while the fingers close)
    max_steps: int = 80  # give up on this waypoint after so many steps


@dataclass(frozen=True)
class GraspProfile:
    """How to take one object: height of the grasp above its pose, and of the carry."""

    grasp_dz: float = 0.0
    grasp_offset: tuple[float, float] = (0.0, 0.0)  # from the pose in x, y (a bowl is taken by its rim)
    approach_dz: float = 0.12
    carry_dz: float = 0.25  # carry this far above the higher of object and target (scenes differ in table height)
    release_dz: float = 0.10  # above the container's pose


# per object kind (LIBERO object names without the _N suffix); default otherwise. A bowl is
# taken by its rim, 4 cm off its centre along the fingers' closing axis (world y), on the side
# with more room (``clear_side``).
GRASP_PROFILES: dict[str, GraspProfile] = {
    "akita_black_bowl": GraspProfile(grasp_dz=0.02, grasp_offset=(0.0, 0.04)),
}


def scene_positions(sim, exclude: str) -> list[np.ndarray]:
    """Positions of every other object in the scene (privileged)."""
    return [np.asarray(v) for k, v in sim.obs.items() if k.endswith("_pos") and not k.startswith("robot0")
            and "_to_" not in k and k != f"{exclude}_pos"]


def clear_side(profile: GraspProfile, obj: np.ndarray, others: list[np.ndarray]) -> GraspProfile:
    """The grasp offset or its mirror image: whichever lies farther from the nearest other object."""
    dx, dy = profile.grasp_offset
    if (dx, dy) == (0.0, 0.0) or not others:
        return profile

    def room(sign: float) -> float:
        point = obj[:2] + sign * np.array([dx, dy])
        return min(float(np.linalg.norm(point - o[:2])) for o in others)

    return profile if room(1.0) >= room(-1.0) else replace(profile, grasp_offset=(-dx, -dy))


def object_kind(name: str) -> str:
    return name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name


@dataclass
class WaypointExpert:
    waypoints: list[Waypoint]
    gain: float = 12.0  # action units per metre of error (an action of 1 asks the OSC for 5 cm)
    index: int = 0
    _steps_here: int = 0
    _held: int = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.waypoints)

    @property
    def fine(self) -> bool:
        """Heading for a waypoint that must be hit closely (a grasp, a release)."""
        return not self.done and self.waypoints[self.index].tolerance < 0.02

    def act(self, eef: np.ndarray) -> np.ndarray:
        if self.done:
            return np.array([0, 0, 0, 0, 0, 0, self.waypoints[-1].gripper], dtype=np.float32)
        wp = self.waypoints[self.index]
        error = wp.target - eef
        self._steps_here += 1
        if np.linalg.norm(error) < wp.tolerance or self._steps_here > wp.max_steps:
            self._held += 1
            if self._held > wp.hold:
                self.index += 1
                self._steps_here = self._held = 0
        delta = np.clip(self.gain * error, -1.0, 1.0)
        return np.array([*delta, 0.0, 0.0, 0.0, wp.gripper], dtype=np.float32)


def pick_place_waypoints(eef: np.ndarray, obj: np.ndarray, container: np.ndarray,
                         profile: GraspProfile = GraspProfile()) -> list[Waypoint]:
    """Above the object, down, close, lift, above the container, down a little, open."""
    dx, dy = profile.grasp_offset
    grasp = obj + np.array([dx, dy, profile.grasp_dz])
    above = np.array([grasp[0], grasp[1], max(obj[2] + profile.approach_dz, eef[2])])
    carry_z = max(obj[2], container[2]) + profile.carry_dz
    lift = np.array([grasp[0], grasp[1], carry_z])
    over = np.array([container[0] + dx, container[1] + dy, carry_z])
    release = np.array([container[0] + dx, container[1] + dy,
                        container[2] + profile.release_dz + profile.grasp_dz])
    return [Waypoint(above, OPEN, 0.02), Waypoint(grasp, OPEN, 0.01, max_steps=60),
            Waypoint(grasp, CLOSE, 1.0, hold=12), Waypoint(lift, CLOSE, 0.03),
            Waypoint(over, CLOSE, 0.02), Waypoint(release, CLOSE, 0.02, max_steps=40),
            Waypoint(release, OPEN, 1.0, hold=10)]


def target_position(sim, name: str) -> np.ndarray:
    """Where a goal predicate's target is: an object's pose, a region's site, or the object a
    ``…_contain_region`` belongs to."""
    if f"{name}_pos" in sim.obs:
        return np.asarray(sim.obs[f"{name}_pos"], dtype=np.float64)
    try:
        return np.asarray(sim.env.sim.data.get_site_xpos(name), dtype=np.float64)
    except (ValueError, KeyError):
        pass
    owner = name.removesuffix("_contain_region")
    if f"{owner}_pos" in sim.obs:
        return np.asarray(sim.obs[f"{owner}_pos"], dtype=np.float64)
    raise ValueError(f"no position for goal target {name!r}")


def goal_placements(sim) -> list[tuple[str, str]]:
    """(object, target) of each 'in'/'on' predicate of the task's BDDL goal, in its order."""
    goals = sim.env.env.parsed_problem["goal_state"]
    pairs = [(g[1], g[2]) for g in goals if g[0] in ("in", "on") and len(g) == 3]
    if len(pairs) != len(goals):
        raise ValueError(f"no scripted expert for {sim.task.name!r}: goal {goals} is not only "
                         "'in'/'on' placements")
    return pairs


def expert_for(sim) -> WaypointExpert:
    """The expert for the sim's current task and placement (call after ``reset``): one pick and
    place per goal predicate, waypoints from the poses at the start."""
    eef = np.asarray(sim.obs["robot0_eef_pos"], dtype=np.float64)
    waypoints: list[Waypoint] = []
    for obj_name, target in goal_placements(sim):
        obj, _ = sim.object_pose(obj_name)
        profile = clear_side(GRASP_PROFILES.get(object_kind(obj_name), GraspProfile()), obj,
                             scene_positions(sim, obj_name))
        waypoints += pick_place_waypoints(eef, obj, target_position(sim, target), profile)
        eef = waypoints[-1].target
    return WaypointExpert(waypoints)


@dataclass(frozen=True)
class ActionNoise:
    """Perturbed execution for behaviour-cloning data (DART, Laskey et al. 2017): every ``every``
    steps a new offset ~ N(0, ``std``²) is added to the expert's xyz command and held, so a demo
    wanders off the expert's path and the closed-loop expert brings it back. A base cloned from
    noise-free demos leaves that thin tube within one chunk and never recovers (0/10 on every
    LIBERO task, docs/libero.md). The episode records the executed action (what the frames show,
    as the world model needs) and, as ``expert_actions``, what the expert commanded: DART's labels.
    An executed action is a poor label: the offset is held for a chunk, so halfway through it the
    drift it caused already shows in the state, and a clone of executed actions learns to keep
    drifting instead of coming back."""

    std: float = 0.0  # action units (1 ≈ the OSC's full step); 0 = off
    every: int = 8  # steps an offset is held (one action chunk)
    coarse_only: bool = True  # no noise on fine waypoints (grasp, close, release: tolerance < 2 cm)

    def offsets(self, seed: int):
        """An endless stream of 7-d offsets for the episode of ``seed`` (reproducible)."""
        rng = np.random.default_rng([seed, 0x5EED])
        while True:
            offset = np.zeros(7, np.float32)
            offset[:3] = rng.normal(0.0, self.std, 3)
            for _ in range(self.every):
                yield offset


def expert_episode(sim, seed: int, settle_steps: int = 5, render: bool = True,
                   noise: ActionNoise = ActionNoise()) -> Episode:
    """One expert episode in the episode format: a frame, the state and the action of every
    policy step, stopping ``settle_steps`` after the first success (or at the step limit)."""
    sim.reset(seed)
    expert = expert_for(sim)
    offsets = noise.offsets(seed) if noise.std > 0 else None
    frames, actions, commanded, states = [], [], [], []
    success_at: int | None = None
    while sim.steps < sim.config.step_limit:
        if render:
            frames.append(sim.render())
        states.append(sim.state)
        action = expert.act(np.asarray(sim.obs["robot0_eef_pos"]))
        commanded.append(action)
        if offsets is not None:
            offset = next(offsets)
            if not (noise.coarse_only and expert.fine):
                action = np.clip(action + offset, -1.0, 1.0)
        actions.append(action)
        step = sim.step(action)
        if step.success and success_at is None:
            success_at = len(actions)
        if success_at is not None and len(actions) >= success_at + settle_steps:
            break
    acts = np.stack(actions).astype(np.float32)
    size = sim.config.image_size
    return Episode(frames=np.stack(frames) if frames else np.zeros((len(acts), size, size, 3), np.uint8),
                   actions=acts, state=np.stack(states).astype(np.float32),
                   gripper=(acts[:, 6] > 0).astype(np.float32), instruction=sim.instruction,
                   task=sim.task_name, success=success_at is not None, seed=seed,
                   camera=sim.config.camera, action_repeat=sim.config.action_repeat,
                   expert_actions=np.stack(commanded).astype(np.float32) if offsets is not None else None)


def collect_libero(out, config, episodes: int, seed: int = 0, keep_failures: bool = False,
                   progress: bool = True, noise: ActionNoise = ActionNoise()) -> dict:
    """Expert demos of one LIBERO task on sampled placements ``seed, seed + 1, …`` (never the
    official init states: those are the evaluation's); ``noise``: perturbed execution."""
    from tqdm import tqdm

    from services.robot_sim.libero_env import LiberoSim
    from services.robot_sim.seeds import EVAL_SEEDS_START
    from w2a_models.episodes import EpisodeStore

    if seed + episodes * 3 > EVAL_SEEDS_START:
        raise ValueError(f"demo seeds must stay below {EVAL_SEEDS_START} (evaluation placements)")
    store = EpisodeStore(out)
    report = {"out": str(out), "saved": 0, "attempted": 0, "failures": 0, "files": []}
    with LiberoSim(config) as sim, tqdm(total=episodes, desc=f"collect {sim.task.name}", unit="ep",
                                        disable=not progress) as bar:
        report["task"] = sim.task_name
        while report["saved"] < episodes and report["attempted"] < episodes * 3:
            episode = expert_episode(sim, seed + report["attempted"], noise=noise)
            report["attempted"] += 1
            if not episode.success:
                report["failures"] += 1
                if not keep_failures:
                    continue
            report["files"].append(store.add(episode).file)
            report["saved"] += 1
            bar.update(1)
    return report


def measure_experts(suite: str, tasks: list[int], episodes: int, on: str = "init_states",
                    progress: bool = True) -> list[dict]:
    """Expert success per task without rendering: on the official init states (``init_states``,
    the table the docs show) or on sampled placements (``placements``, where experts are tuned).
    ``sync_rate``: the share of successful demos whose gripper segments match the rules planner's
    skills one to one (what Stage 1's skill labels rely on)."""
    from services.robot_sim.libero_env import LiberoConfig, LiberoSim
    from services.robot_sim.seeds import EVAL_SEEDS_START
    from w2a_models.plan_rules import decompose
    from w2a_models.segmentation import segment_loaded
    from w2a_models.skills import align_skills

    first = EVAL_SEEDS_START if on == "init_states" else 1000
    rows = []
    for task in tasks:
        with LiberoSim(LiberoConfig(suite=suite, task=task)) as sim:
            outcomes, steps, in_sync = [], [], []
            plan = [s.description for s in decompose(sim.instruction, sim.task_name)]
            try:
                for k in range(episodes):
                    episode = expert_episode(sim, first + k, settle_steps=5, render=False)
                    outcomes.append(bool(episode.success))
                    steps.append(episode.length)
                    if episode.success:
                        in_sync.append(align_skills(plan, segment_loaded(episode).segments).in_sync)
            except ValueError as exc:  # no expert for this kind of goal (yet): say so in its row
                rows.append({"suite": suite, "task": sim.task.index, "name": sim.task.name, "on": on,
                             "episodes": 0, "success_rate": None, "error": str(exc)})
                continue
            rows.append({"suite": suite, "task": sim.task.index, "name": sim.task.name, "on": on,
                         "episodes": episodes, "success_rate": float(np.mean(outcomes)),
                         "failed": [first + k for k, ok in enumerate(outcomes) if not ok],
                         "mean_steps": float(np.mean(steps)),
                         "sync_rate": float(np.mean(in_sync)) if in_sync else None})
        if progress:
            print(f"  {suite} {rows[-1]['task']} {rows[-1]['name']}: {rows[-1]['success_rate']:.2f}", flush=True)
    return rows
