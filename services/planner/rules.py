"""The offline ``rules`` planner: a deterministic decomposer, no network.

Grammar (applied in this order):

1. **Task table.** When the request names a known simulator task (``task``), or the normalised
   instruction is that task's catalogue instruction, the task's skill list is returned. These
   lists follow how the scripted experts actually move, so their count matches the segments
   ``w2a_models.skills`` finds in expert demos: a grasp task has one skill per gripper state
   (reach+grasp, then carry+place); a non-grasp task one skill per arm pause (e.g. push: move
   above the object, lower onto it, push it).
2. **Clauses.** Otherwise the instruction is split into clauses at ``then``, ``;``, ``,`` and at
   ``and`` when a verb follows. Each clause starts with a verb phrase:

   ==============================================  ============================================
   clause                                          skills (kind)
   ==============================================  ============================================
   pick up / pick / grasp / grab / take X           reach and grasp X (grasp)
   lift / raise X                                   lift X (carry)
   place / put / set / insert / stack / drop X P    carry X P and place it (place)
   release / let go of / open the gripper           release X (release)
   push / slide / shove X P                         move above X (reach), lower onto X (reach),
                                                    push X P (push)
   pull / open X                                    reach X (reach), pull X P (pull)
   close / shut X                                   push X closed (push)
   press / push down / tap X                        press X (press)
   turn / rotate / twist X                          reach X (reach), turn X (turn)
   reach / move / go to X                           reach X (reach)
   anything else                                    the clause itself (other)
   ==============================================  ============================================

   "it"/"them" refer to the last object named. Placing or lifting an object that no earlier
   clause grasped first adds "reach and grasp X" ("put the cup in the bin" is pick + place).
   The list is cut to ``max_skills``.
"""

from __future__ import annotations

import re

from services.planner.cache import normalise
from services.planner.schemas import Skill, SkillKind
from w2a_models.tasks import TASKS

K = SkillKind

TASK_SKILLS: dict[str, list[tuple[str, SkillKind]]] = {
    "pick-place-v3": [("reach and grasp the puck", K.grasp),
                      ("carry the puck to the goal and place it", K.place)],
    "pick-place-wall-v3": [("reach and grasp the puck", K.grasp),
                           ("carry the puck over the wall to the goal and place it", K.place)],
    "assembly-v3": [("reach and grasp the nut", K.grasp),
                    ("carry the nut over the peg and put it on", K.place)],
    "disassemble-v3": [("reach and grasp the nut", K.grasp),
                       ("lift the nut off the peg", K.carry)],
    "shelf-place-v3": [("reach and grasp the block", K.grasp),
                       ("carry the block onto the shelf and place it", K.place)],
    "bin-picking-v3": [("reach and grasp the cube", K.grasp),
                       ("carry the cube into the other bin and place it", K.place)],
    "basketball-v3": [("reach and grasp the ball", K.grasp),
                      ("carry the ball over the hoop and dunk it", K.place)],
    "hammer-v3": [("reach and grasp the hammer", K.grasp),
                  ("swing the hammer to drive the nail in", K.push)],
    "push-v3": [("move above the puck", K.reach), ("lower onto the puck", K.reach),
                ("push the puck to the goal", K.push)],
    "push-back-v3": [("move above the puck", K.reach), ("lower onto the puck", K.reach),
                     ("push the puck back to the goal", K.push)],
    "plate-slide-v3": [("slide the plate into the goal", K.push)],  # the expert never pauses
    "door-open-v3": [("reach the door handle", K.reach), ("pull the door open", K.pull)],
    "drawer-open-v3": [("move above the drawer handle", K.reach), ("lower onto the handle", K.reach),
                       ("pull the drawer open", K.pull)],
    "drawer-close-v3": [("push the drawer closed", K.push)],
    "button-press-v3": [("press the button", K.press)],
    "reach-v3": [("reach the goal position", K.reach)],
}

_VERBS = {
    "pick up": "grasp", "pick": "grasp", "grasp": "grasp", "grab": "grasp", "take": "grasp",
    "lift": "lift", "raise": "lift",
    "place": "place", "put": "place", "set": "place", "insert": "place", "stack": "place",
    "drop": "place", "dunk": "place",
    "release": "release", "let go of": "release", "let go": "release",
    "push down": "press", "press": "press", "tap": "press",
    "push": "push", "slide": "push", "shove": "push",
    "pull": "pull", "open": "pull",
    "close": "close", "shut": "close",
    "turn": "turn", "rotate": "turn", "twist": "turn",
    "reach": "reach", "move to": "reach", "move": "reach", "go to": "reach",
}
_VERB_RE = "|".join(sorted((re.escape(v) for v in _VERBS), key=len, reverse=True))
_CLAUSE_SPLIT = re.compile(rf"\s*(?:;|,\s*(?:and\s+)?(?:then\s+)?|\bthen\b|\band\s+(?:then\s+)?(?=(?:{_VERB_RE})\b))\s*")
_LEADING_VERB = re.compile(rf"^(?:please\s+|now\s+|first\s+|finally\s+)*({_VERB_RE})\b\s*(.*)$")
_PREPOSITION = re.compile(r"\s+\b(to|into|onto|on|in|at|over|under|inside|toward|towards|from|off)\b\s+")


def _split_object(rest: str) -> tuple[str, str]:
    """'the puck to the goal' -> ('the puck', 'to the goal')."""
    match = _PREPOSITION.search(rest)
    if not match:
        return rest.strip(), ""
    return rest[: match.start()].strip(), rest[match.start():].strip()


def _clause_skills(clause: str, last_object: str, held: str | None
                   ) -> tuple[list[tuple[str, SkillKind]], str, str | None]:
    """Skills of one clause, the object it names, and the object held afterwards."""
    match = _LEADING_VERB.match(clause)
    if not match:
        return [(clause, K.other)], last_object, held
    action, rest = _VERBS[match.group(1)], match.group(2)
    obj, place = _split_object(rest)
    if obj in {"", "it", "them", "that"}:
        obj = last_object or "the object"
    where = f" {place}" if place else ""
    grasp_first = [] if held == obj else [(f"reach and grasp {obj}", K.grasp)]
    table = {
        "grasp": [(f"reach and grasp {obj}", K.grasp)],
        "lift": grasp_first + [(f"lift {obj}{where}", K.carry)],
        "place": grasp_first + [(f"carry {obj}{where} and place it", K.place)],
        "release": [(f"release {obj}", K.release)],
        "push": [(f"move above {obj}", K.reach), (f"lower onto {obj}", K.reach),
                 (f"push {obj}{where}", K.push)],
        "pull": [(f"reach {obj}", K.reach), (f"pull {obj}{where or ' open'}", K.pull)],
        "close": [(f"push {obj} closed", K.push)],
        "press": [(f"press {obj}", K.press)],
        "turn": [(f"reach {obj}", K.reach), (f"turn {obj}{where}", K.turn)],
        "reach": [(f"reach {obj}{where}".strip(), K.reach)],
    }
    if action in ("grasp", "lift"):
        held = obj
    elif action in ("place", "release"):
        held = None
    return table[action], obj, held


def skill_kind(description: str) -> SkillKind:
    """The kind of a single given skill: the last kind its own decomposition ends in."""
    skills = decompose(description)
    return skills[-1].kind if skills else SkillKind.other


def task_for(instruction: str, task: str | None) -> str | None:
    if task in TASK_SKILLS:
        return task
    norm = normalise(instruction)
    for name, spec in TASKS.items():
        if name in TASK_SKILLS and normalise(spec.instruction) == norm:
            return name
    return None


def decompose(instruction: str, task: str | None = None, max_skills: int = 8) -> list[Skill]:
    known = task_for(instruction, task)
    if known is not None:
        pairs = TASK_SKILLS[known]
    else:
        pairs, last_object, held = [], "", None
        text = normalise(instruction)
        for clause in filter(None, (c.strip() for c in _CLAUSE_SPLIT.split(text))):
            skills, last_object, held = _clause_skills(clause, last_object, held)
            pairs.extend(skills)
    return [Skill(index=i, description=d, kind=k) for i, (d, k) in enumerate(pairs[:max_skills])]


class RulesBackend:
    name = "rules"
    model = "rules-v1"

    async def plan(self, instruction: str, task: str | None, max_skills: int) -> list[Skill]:
        return decompose(instruction, task, max_skills)

    async def ready(self) -> tuple[bool, str]:
        return True, "offline"
