"""Scripted LIBERO experts: waypoint controllers that read the simulator's object poses.

LIBERO's own demos are human teleoperation from a hub (not reachable here), so demos come from
experts that know where every object is, as Meta-World's do. An expert is a list of waypoints
(end-effector target, gripper command, tolerance) built from the objects' poses when it starts;
the OSC controller is driven toward each by a proportional delta. Privileged state is read here
and in the upper bounds only, never by a policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
    approach_dz: float = 0.12
    carry_z: float = 0.30  # absolute, above every obstacle on the table
    release_dz: float = 0.10  # above the container's pose


# per object kind (LIBERO object names without the _N suffix); default otherwise
GRASP_PROFILES: dict[str, GraspProfile] = {}


def object_kind(name: str) -> str:
    return name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name


@dataclass
class WaypointExpert:
    waypoints: list[Waypoint]
    gain: float = 12.0  # action units per metre of error (an action of 1 asks the OSC for 5 cm)
    index: int = 0
    _steps_here: int = 0
    _held: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.index >= len(self.waypoints)

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
    grasp = obj + np.array([0.0, 0.0, profile.grasp_dz])
    above = np.array([obj[0], obj[1], max(obj[2] + profile.approach_dz, eef[2])])
    lift = np.array([obj[0], obj[1], profile.carry_z])
    over = np.array([container[0], container[1], profile.carry_z])
    release = np.array([container[0], container[1], container[2] + profile.release_dz + profile.grasp_dz])
    return [Waypoint(above, OPEN, 0.02), Waypoint(grasp, OPEN, 0.01, max_steps=60),
            Waypoint(grasp, CLOSE, 1.0, hold=12), Waypoint(lift, CLOSE, 0.03),
            Waypoint(over, CLOSE, 0.02), Waypoint(release, CLOSE, 0.02, max_steps=40),
            Waypoint(release, OPEN, 1.0, hold=10)]


def expert_for(sim) -> WaypointExpert:
    """The expert for the sim's current task and placement (call after ``reset``)."""
    objects = sim.objects
    if len(objects) < 2:
        raise ValueError(f"no scripted expert for {sim.task.name!r} (objects of interest {objects})")
    target, container = objects[0], objects[1]
    obj, _ = sim.object_pose(target)
    box, _ = sim.object_pose(container)
    profile = GRASP_PROFILES.get(object_kind(target), GraspProfile())
    return WaypointExpert(pick_place_waypoints(np.asarray(sim.obs["robot0_eef_pos"]), obj, box, profile))


def run_expert(sim, seed: int, render: bool = False) -> dict:
    """One expert episode; frames only when asked."""
    sim.reset(seed)
    expert = expert_for(sim)
    frames, actions, success = [], [], False
    while sim.steps < sim.config.step_limit:
        if render:
            frames.append(sim.render())
        action = expert.act(np.asarray(sim.obs["robot0_eef_pos"]))
        actions.append(action)
        step = sim.step(action)
        if step.success:
            success = True
            break
    return {"success": success, "steps": sim.steps, "waypoint": expert.index, "frames": frames,
            "actions": np.stack(actions)}
