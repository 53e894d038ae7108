"""The ``rules`` decomposer: instruction -> ordered atomic skills, deterministic, no network (the
planner service's offline backend, and what the trainer and the robots use to name skills).

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

   "turn on / turn off / switch on X" gives reach X, then the clause's own verb phrase (turn).
   "it"/"them" as the object of a pick, place or lift is the last object named; as the object
   of open / close / turn / press, the last fixture (what was opened, else the last place
   something was put: "put the bowl in the drawer and close it" closes the drawer); inside a
   place phrase ("put the moka pot on it") the last place or fixture named; a bare "inside"
   means inside what was opened ("open the microwave door, put the bowl inside"). Placing or
   lifting an object that no earlier clause grasped first adds "reach and grasp X" ("put the
   cup in the bin" is pick + place). A grasp keeps the phrase saying which object ("the black
   bowl next to the ramekin"); later clauses call it by its head ("the black bowl").
3. **Conjunctions.** "V both A and B P" is "V A P" and "V B P"; "V both Xs P" is the first and
   the second X; "put A P and B Q" carries the verb over to "B Q". "and" between adjectives
   ("the yellow and white mug") joins nothing.

The list is cut to ``max_skills``. ``tests/fixtures/libero_plans.json`` holds every LIBERO
instruction with its plan.
"""

from __future__ import annotations

import re

from w2a_models.plans import Skill, SkillKind, normalise
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
    "turn on": "switch", "turn off": "switch", "switch on": "switch", "switch off": "switch",
    "turn": "turn", "rotate": "turn", "twist": "turn",
    "reach": "reach", "move to": "reach", "move": "reach", "go to": "reach",
}
_VERB_RE = "|".join(sorted((re.escape(v) for v in _VERBS), key=len, reverse=True))
_CLAUSE_SPLIT = re.compile(
    rf"\s*(?:;|,\s*(?:and\s+)?(?:then\s+)?|\bthen\b|\band\s+(?:then\s+)?(?=(?:{_VERB_RE})\b))\s*")
_LEADING_VERB = re.compile(rf"^(?:please\s+|now\s+|first\s+|finally\s+)*({_VERB_RE})\b\s*(.*)$")
# where something goes or is: multi-word prepositions first
_PREPOSITIONS = ("to the left of", "to the right of", "in front of", "on top of", "next to", "between",
                 "inside", "into", "onto", "on", "in", "to", "at", "over", "under", "toward", "towards",
                 "from", "off", "behind")
_PREPOSITION = re.compile(r"\s+\b(" + "|".join(re.escape(p) for p in _PREPOSITIONS) + r")\b(?:\s+|$)")
_PRONOUNS = {"", "it", "them", "that"}
# "put both A and B in the basket": one place clause per object
_BOTH = re.compile(r"^(?P<verb>.+?)\s+both\s+(?P<a>.+?)\s+and\s+(?P<b>.+?)(?P<where>\s+\b(?:"
                   + "|".join(re.escape(p) for p in _PREPOSITIONS) + r")\b.*)$")
# "put both moka pots on the stove": the first and the second of them
_BOTH_PLURAL = re.compile(r"^(?P<verb>.+?)\s+both\s+(?P<things>[a-z ]+?)s(?P<where>\s+\b(?:"
                          + "|".join(re.escape(p) for p in _PREPOSITIONS) + r")\b.*)$")
# "put the banana in the basket and the apple on the plate": the verb carries over
_GAPPED = re.compile(r"\s+and\s+(?=(?:the|a|an)\s+[a-z ]+?\s+\b(?:"
                     + "|".join(re.escape(p) for p in _PREPOSITIONS) + r")\b)")


def _split_object(rest: str) -> tuple[str, str]:
    """'the puck to the goal' -> ('the puck', 'to the goal')."""
    match = _PREPOSITION.search(" " + rest)
    if not match:
        return rest.strip(), ""
    return rest[: max(0, match.start() - 1)].strip(), rest[max(0, match.start()):].strip()


def _clauses(text: str) -> list[str]:
    """Split into clauses, expanding 'both' and carrying a verb over a gapped 'and the X P'."""
    out: list[str] = []
    for clause in filter(None, (c.strip() for c in _CLAUSE_SPLIT.split(text))):
        match = _BOTH.match(clause)
        plural = None if match else _BOTH_PLURAL.match(clause)
        if match:
            verb, where = match.group("verb"), match.group("where")
            out += [f"{verb} {match.group('a')}{where}", f"{verb} {match.group('b')}{where}"]
            continue
        if plural:
            verb, thing, where = plural.group("verb"), plural.group("things").strip(), plural.group("where")
            out += [f"{verb} the first {thing}{where}", f"{verb} the second {thing}{where}"]
            continue
        lead = _LEADING_VERB.match(clause)
        parts = _GAPPED.split(clause) if lead and _VERBS[lead.group(1)] == "place" else [clause]
        out.append(parts[0])
        out += [f"{lead.group(1)} {p}" for p in parts[1:]]
    return out


class _Context:
    """What earlier clauses named: pronouns and bare 'inside' resolve against it."""

    def __init__(self) -> None:
        self.last_object = ""  # the last thing picked up or moved
        self.held: str | None = None
        self.last_target = ""  # the last place something was put, or fixture acted on
        self.opened = ""  # the last thing opened (what "close it" closes)

    def target(self, phrase: str) -> str:
        """'on it' / 'inside' / 'in the drawer' -> the place phrase with the referent filled in."""
        if not phrase:
            return ""
        prep, _, noun = phrase.partition(" ")
        if phrase in ("inside", "in", "into"):
            container = (self.opened or self.last_target).removesuffix(" door")
            return f"into {container}" if container else "inside"
        if noun in _PRONOUNS:
            return f"{prep} {self.last_target or 'it'}"
        return phrase


def _noun(place: str) -> str:
    """'in the bottom drawer of the cabinet' -> 'the bottom drawer of the cabinet'."""
    match = _PREPOSITION.match(" " + place)
    return place[match.end() - 1:].strip() if match else place


def _clause_skills(clause: str, ctx: _Context) -> list[tuple[str, SkillKind]]:
    """Skills of one clause; updates what the context remembers."""
    match = _LEADING_VERB.match(clause)
    if not match:
        return [(clause, K.other)]
    verb, rest = match.group(1), match.group(2)
    action = _VERBS[verb]
    obj, place = _split_object(rest)
    if action == "grasp":  # the qualifier says which one ('the bowl next to the plate'): keep it
        described = rest.strip() if obj not in _PRONOUNS else (ctx.last_object or "the object")
        obj = ctx.last_object if obj in _PRONOUNS and ctx.last_object else obj
        ctx.last_object, ctx.held = obj, obj
        return [(f"reach and grasp {described}", K.grasp)]
    if action in ("close", "pull", "switch", "turn", "press") and obj in _PRONOUNS:
        obj = (ctx.opened if action == "close" else "") or ctx.last_target or ctx.last_object or "the object"
    elif obj in _PRONOUNS:
        obj = ctx.last_object or "the object"
    where = ctx.target(place)
    suffix = f" {where}" if where else ""
    grasp_first = [] if ctx.held == obj else [(f"reach and grasp {obj}", K.grasp)]
    table = {
        "lift": [*grasp_first, (f"lift {obj}{suffix}", K.carry)],
        "place": [*grasp_first, (f"carry {obj}{suffix} and place it", K.place)],
        "release": [(f"release {obj}", K.release)],
        "push": [(f"move above {obj}", K.reach), (f"lower onto {obj}", K.reach),
                 (f"push {obj}{suffix}", K.push)],
        "pull": [(f"reach {obj}", K.reach), (f"pull {obj}{suffix or ' open'}", K.pull)],
        "close": [(f"push {obj} closed", K.push)],
        "press": [(f"press {obj}", K.press)],
        "switch": [(f"reach {obj}", K.reach), (f"{verb} {obj}", K.turn)],
        "turn": [(f"reach {obj}", K.reach), (f"turn {obj}{suffix}", K.turn)],
        "reach": [(f"reach {obj}{suffix}".strip(), K.reach)],
    }
    if action == "lift":
        ctx.last_object, ctx.held = obj, obj
    elif action in ("place", "push"):
        ctx.last_object, ctx.held = obj, None
        if where:
            ctx.last_target = _noun(where)
    elif action == "release":
        ctx.held = None
    elif action in ("pull", "close", "switch", "turn", "press"):
        ctx.last_target = obj
        if action == "pull":
            ctx.opened = obj
    return table[action]


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
        pairs, ctx = [], _Context()
        for clause in _clauses(normalise(instruction)):
            pairs.extend(_clause_skills(clause, ctx))
    return [Skill(index=i, description=d, kind=k) for i, (d, k) in enumerate(pairs[:max_skills])]
