"""The demo report and docs/results.json keep the keys readers rely on, with the paired test."""

import importlib.util
from pathlib import Path

from services.demo import arms_table, paired_by_task

ROOT = Path(__file__).resolve().parents[2]


def _evaluation():
    def arm(name, n, wins):
        outcomes = {str(100_000 + s): s in wins for s in range(n)}
        k = sum(outcomes.values())
        return {"task": "push-v3", "arm": name, "episodes": n, "successes": k, "success_rate": k / n,
                "ci95": [0.0, 1.0], "outcomes": outcomes}
    return [arm("base", 20, set(range(5))), arm("w2a", 20, set(range(12))),
            arm("expert_corrected", 10, set(range(9)))]


def test_paired_comparisons_use_the_shared_seeds_of_each_arm():
    evaluation = _evaluation()
    w2a = paired_by_task(evaluation)["push-v3"]
    assert (w2a["episodes"], w2a["gained"], w2a["lost"]) == (20, 7, 0)
    assert w2a["p_value"] < 0.02
    upper = paired_by_task(evaluation, treatment="expert_corrected")["push-v3"]
    assert upper["episodes"] == 10 and upper["gained"] == 4  # the base's first 10 seeds only
    rows = arms_table({"evaluation": evaluation, "paired_arms": {
        "w2a": {"push-v3": w2a}, "expert_corrected": {"push-v3": upper}}})
    text = "\n".join(rows)
    assert "expert_corrected (upper bound)" in text and "+35 on 20" in text


def test_results_json_keeps_its_keys_and_adds_arms_and_p_value():
    spec = importlib.util.spec_from_file_location("results_doc", ROOT / "scripts" / "results_doc.py")
    results_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results_doc)
    evaluation = _evaluation()
    report = {"evaluation": evaluation, "paired": paired_by_task(evaluation),
              "paired_arms": {"w2a": paired_by_task(evaluation)}, "stage1": {}, "stage2": {},
              "stage2_arms": {"w2a": {"mode": "world_model", "updates": 3}},
              "sync": {"sync_rate": 1.0}, "profile": {}, "phase_seconds": {}, "total_seconds": 1.0}
    (task,) = results_doc.summary(report)["tasks"]
    assert task["base_success_rate"] == 0.25 and task["w2a_success_rate"] == 0.6
    assert set(task["arms"]) == {"base", "w2a", "expert_corrected"}
    assert set(task["arms"]["w2a"]) == {"success_rate", "ci95", "episodes"}
    assert 0 < task["p_value"] < 0.02


def test_reuse_links_an_earlier_runs_pretraining_and_refuses_a_different_profile(tmp_path):
    import json
    from dataclasses import asdict, replace

    import pytest

    from services.demo import PROFILES, reuse_pretraining

    p = replace(PROFILES["tiny"], play_episodes_per_task=0)
    earlier = tmp_path / "earlier"
    for d in ("data", "base", "world_model", "stage1_chunk", "stage1_pooled_dit"):
        (earlier / d).mkdir(parents=True)
    (earlier / "base" / "weights").write_text("w")
    (earlier / "report.json").write_text(json.dumps({"profile": asdict(p), "base": {"loss": 1.0},
                                                     "stage1": {"chunk": {}}}))
    out = tmp_path / "now"
    out.mkdir()
    # Stage 2 settings may differ: they are what a reuse is for
    pieces = reuse_pretraining(earlier, out, replace(p, trainer_lr=1.0, arms=("w2a", "w2a_pooled_dit")))
    assert (out / "base" / "weights").read_text() == "w"
    assert pieces["base"] == {"loss": 1.0} and pieces["reused_from"] == str(earlier.resolve())
    assert pieces["reused"] == ["pretraining", "stage1"] and (out / "stage1_chunk").is_dir()
    with pytest.raises(ValueError, match="differs on base_steps"):
        reuse_pretraining(earlier, tmp_path / "other", replace(p, base_steps=1, stage1_steps=2))
    # a Stage 1 change (or new play data) keeps the demos, base and world model; Stage 1 runs again
    (tmp_path / "s1").mkdir()
    pieces = reuse_pretraining(earlier, tmp_path / "s1", replace(p, play_episodes_per_task=4))
    assert pieces["reused"] == ["pretraining"] and "stage1" not in pieces
    assert (tmp_path / "s1" / "base").is_dir() and not (tmp_path / "s1" / "stage1_chunk").exists()
    # a run from before a field existed had the field's default
    old_profile = {k: v for k, v in asdict(p).items() if k not in ("play_episodes_per_task", "play_offset_std")}
    (earlier / "report.json").write_text(json.dumps({"profile": old_profile, "stage1": {}}))
    (tmp_path / "s2").mkdir()
    assert reuse_pretraining(earlier, tmp_path / "s2", p)["reused"] == ["pretraining", "stage1"]
    with pytest.raises(ValueError, match=r"no report.json"):
        reuse_pretraining(tmp_path / "nothing", out, p)
    (earlier / "stage1_pooled_dit").rmdir()
    with pytest.raises(ValueError, match="missing stage1_pooled_dit"):
        reuse_pretraining(earlier, tmp_path / "third", p)
    # play data is lent too when the play fields agree, and must then be there
    played = replace(p, play_episodes_per_task=1)
    (earlier / "report.json").write_text(json.dumps({"profile": asdict(played), "stage1": {}, "play": {}}))
    with pytest.raises(ValueError, match="missing play"):
        reuse_pretraining(earlier, tmp_path / "s3", played)
    (earlier / "play").mkdir()
    (earlier / "stage1_pooled_dit").mkdir()
    assert reuse_pretraining(earlier, tmp_path / "s4", played)["reused"] == ["pretraining", "play", "stage1"]
    assert (tmp_path / "s4" / "play").is_dir()


def test_charts_name_their_axes_and_draw_every_series(tmp_path):
    import matplotlib.image
    import pytest

    from services.jobs.plots import plot_curves, plot_success_by_arm, plot_success_by_version

    path = plot_curves(tmp_path / "loss.png", {"w2a": [(1, 3.0), (2, 2.0)], "expert_corrected": [(1, 1.0)]},
                       "Stage 2 loss", xlabel="residual update")
    assert matplotlib.image.imread(path).shape[2] in (3, 4)
    rows = [{"task": "push-v3", "arm": arm, "success_rate": r, "ci95": [r - 0.05, r + 0.05], "episodes": 50}
            for arm, r in (("base", 0.3), ("w2a", 0.4))]
    assert plot_success_by_arm(tmp_path / "arms.png", rows).exists()
    from w2a_models.stats import wilson_ci95  # a perfect arm (50/50: runs/libero8's report died on it)
    perfect = [{"task": "libero_object:1", "arm": "w2a", "success_rate": 1.0, "ci95": list(wilson_ci95(50, 50)),
                "episodes": 50}]
    assert plot_success_by_arm(tmp_path / "perfect.png", perfect).exists()
    versions = {0: {"success_rate": 0.25, "episodes": 8}, 3: {"success_rate": 0.5, "episodes": 4}}
    assert matplotlib.image.imread(plot_success_by_version(tmp_path / "v.png", versions, "by version")).ndim == 3
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_curves(tmp_path / "none.png", {"w2a": []}, "empty")
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_success_by_version(tmp_path / "none.png", {}, "empty")


def test_a_libero_profile_that_cannot_run_is_refused_before_anything_starts():
    from dataclasses import replace

    import pytest

    from services.demo import PROFILES, check_profile

    p = PROFILES["libero"]
    check_profile(p)
    assert p.sim == "libero" and all(":" in t for t in p.tasks) and p.eval_episodes <= 50
    with pytest.raises(ValueError, match="simulator oracle"):
        check_profile(replace(p, arms=("w2a", "expert_corrected")))
    with pytest.raises(ValueError, match="50 official init states"):
        check_profile(replace(p, eval_episodes=60))
    with pytest.raises(ValueError, match="suite>:<task index"):
        check_profile(replace(p, tasks=("libero_object",)))
    with pytest.raises(ValueError, match="valid"):
        check_profile(replace(p, tasks=("libero_object:12",)))


def test_base_only_tasks_come_first_in_seed_order_and_join_the_base_subset_only(tmp_path):
    """A suite-wide base: its extra tasks keep their demo seeds whichever tasks are evaluated,
    and their demos reach the base's training set but not the world model's data directory."""
    from dataclasses import replace

    from services.demo import PROFILES, _base_subset, check_profile, demo_tasks

    p = replace(PROFILES["libero"], tasks=("libero_object:5", "libero_10:0"),
                base_tasks=("libero_object:1", "libero_object:5"))
    assert demo_tasks(p) == ("libero_object:1", "libero_object:5", "libero_10:0")
    assert demo_tasks(replace(p, base_tasks=())) == p.tasks  # other profiles: seeds unchanged
    check_profile(p)
    import pytest
    with pytest.raises(ValueError, match="valid"):
        check_profile(replace(p, base_tasks=("libero_object:12",)))
    data, only = tmp_path / "data", tmp_path / "data_base_only"
    for root, task, n in ((data, "libero_object:5", 6), (data, "libero_10:0", 6), (only, "libero_object:1", 4)):
        (root / task).mkdir(parents=True)
        for k in range(n):
            (root / task / f"ep{k}.npz").write_bytes(b"x")
    subset = _base_subset(data, tmp_path / "base_data", 4, demo_tasks(p), base_only=only)
    for task in demo_tasks(p):
        links = sorted((subset / task).iterdir())
        assert [link.name for link in links] == [f"ep{k}.npz" for k in range(4)]
        assert all(link.resolve().parent.parent == (only if task == "libero_object:1" else data) for link in links)
    assert not (data / "libero_object:1").exists()  # the world model never sees the base-only demos
