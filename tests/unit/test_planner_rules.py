import pytest

from services.planner.rules import TASK_SKILLS, decompose, skill_kind
from services.planner.schemas import SkillKind as K
from w2a_models.tasks import TASKS


def _plan(text, **kw):
    return [(s.description, s.kind) for s in decompose(text, **kw)]


def test_meta_world_tasks_use_the_task_table():
    assert _plan("anything", task="pick-place-v3") == [
        ("reach and grasp the puck", K.grasp), ("carry the puck to the goal and place it", K.place)]
    # the catalogue instruction alone identifies the task too
    assert len(decompose(TASKS["push-v3"].instruction)) == 3
    assert all(name in TASKS for name in TASK_SKILLS)


def test_clause_grammar():
    assert _plan("Pick up the red block, then place it on the shelf.") == [
        ("reach and grasp the red block", K.grasp), ("carry the red block on the shelf and place it", K.place)]
    assert _plan("put the cup in the bin") == [
        ("reach and grasp the cup", K.grasp), ("carry the cup in the bin and place it", K.place)]
    assert [k for _, k in _plan("open the drawer and push the button")] == [K.reach, K.pull, K.reach, K.reach, K.push]
    assert _plan("grasp the mug; lift it; release it") == [
        ("reach and grasp the mug", K.grasp), ("lift the mug", K.carry), ("release the mug", K.release)]
    assert _plan("do a backflip") == [("do a backflip", K.other)]
    assert len(decompose("push the puck to the goal and then push the block", max_skills=4)) == 4


def test_skill_kind_of_a_single_skill():
    assert skill_kind("press the red button") == K.press
    assert skill_kind("wave hello") == K.other


@pytest.mark.parametrize("text", ["pick up the puck and place it at the goal", "push the puck"])
def test_deterministic(text):
    assert decompose(text) == decompose(text)
