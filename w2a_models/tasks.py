"""Catalogue of the simulator tasks w2a knows: instruction text and whether the task grasps.

Pure data so the planner, the collector and the trainer agree on names without importing the
simulator. ``grasp`` says whether the expert picks an object up (gripper segmentation applies) or
only pushes/turns things (the motion fallback applies).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    instruction: str
    grasp: bool
    object_name: str = "object"


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("pick-place-v3", "pick up the puck and place it at the goal", True, "puck"),
        TaskSpec("pick-place-wall-v3", "pick up the puck, go over the wall and place it at the goal", True, "puck"),
        TaskSpec("assembly-v3", "pick up the nut and put it onto the peg", True, "nut"),
        TaskSpec("disassemble-v3", "pick the nut up off the peg", True, "nut"),
        TaskSpec("shelf-place-v3", "pick up the block and place it on the shelf", True, "block"),
        TaskSpec("bin-picking-v3", "pick the cube out of the bin and place it in the other bin", True, "cube"),
        TaskSpec("basketball-v3", "pick up the ball and dunk it into the hoop", True, "ball"),
        TaskSpec("hammer-v3", "pick up the hammer and hammer the nail in", True, "hammer"),
        TaskSpec("push-v3", "push the puck to the goal", False, "puck"),
        TaskSpec("push-back-v3", "push the puck back to the goal", False, "puck"),
        TaskSpec("plate-slide-v3", "slide the plate into the goal", False, "plate"),
        TaskSpec("door-open-v3", "open the door", False, "door"),
        TaskSpec("drawer-open-v3", "open the drawer", False, "drawer"),
        TaskSpec("drawer-close-v3", "close the drawer", False, "drawer"),
        TaskSpec("button-press-v3", "press the button", False, "button"),
        TaskSpec("reach-v3", "reach the goal position", False, "goal"),
    ]
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise KeyError(f"unknown task {name!r}; known tasks: {known}") from None
