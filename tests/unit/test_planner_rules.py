import pytest

from w2a_models.plan_rules import TASK_SKILLS, decompose, skill_kind
from w2a_models.plans import SkillKind as K
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


def test_libero_conjunctions_pronouns_and_containers():
    # two objects, one destination: one pick and one place each
    assert _plan("put both the alphabet soup and the tomato sauce in the basket") == [
        ("reach and grasp the alphabet soup", K.grasp), ("carry the alphabet soup in the basket and place it", K.place),
        ("reach and grasp the tomato sauce", K.grasp), ("carry the tomato sauce in the basket and place it", K.place)]
    assert [d for d, _ in _plan("put both moka pots on the stove")][::2] == [
        "reach and grasp the first moka pot", "reach and grasp the second moka pot"]
    # a verb carried over a gapped clause; an adjective pair is not a conjunction of objects
    assert _plan("put the banana in the basket and the apple on the plate")[2:] == [
        ("reach and grasp the apple", K.grasp), ("carry the apple on the plate and place it", K.place)]
    assert _plan("put the yellow and white mug on the right plate")[0] == (
        "reach and grasp the yellow and white mug", K.grasp)
    # "it" after a fixture is the fixture; "inside" is inside what was opened; "close it" closes it
    assert _plan("turn on the stove and put the moka pot on it") == [
        ("reach the stove", K.reach), ("turn on the stove", K.turn),
        ("reach and grasp the moka pot", K.grasp), ("carry the moka pot on the stove and place it", K.place)]
    assert _plan("open the microwave door, put the bowl inside, and close it") == [
        ("reach the microwave door", K.reach), ("pull the microwave door open", K.pull),
        ("reach and grasp the bowl", K.grasp), ("carry the bowl into the microwave and place it", K.place),
        ("push the microwave door closed", K.push)]
    assert _plan("put the black bowl in the bottom drawer of the cabinet and close it")[-1] == (
        "push the bottom drawer of the cabinet closed", K.push)
    # which object: the qualifier stays with the grasp, "it" is the object itself
    assert _plan("pick up the black bowl next to the ramekin and place it on the plate") == [
        ("reach and grasp the black bowl next to the ramekin", K.grasp),
        ("carry the black bowl on the plate and place it", K.place)]


def test_every_libero_instruction_keeps_its_reviewed_plan():
    """tests/fixtures/libero_plans.json: every instruction of the four suites with the plan that
    was read and accepted; a grammar change that alters one must update it knowingly."""
    import json
    from pathlib import Path

    rows = json.loads((Path(__file__).parents[1] / "fixtures" / "libero_plans.json").read_text())
    assert len(rows) == 40
    for row in rows:
        assert [[d, k.value] for d, k in _plan(row["instruction"])] == row["plan"], row["instruction"]


def test_the_fixture_lists_the_installed_suites_instructions():
    import json
    from pathlib import Path

    from services.robot_sim.libero_env import SUITES, suite_tasks

    rows = json.loads((Path(__file__).parents[1] / "fixtures" / "libero_plans.json").read_text())
    assert [(r["suite"], r["task"], r["instruction"]) for r in rows] == [
        (s, t.index, t.instruction) for s in SUITES for t in suite_tasks(s)]
