"""Turn a ``w2a demo --profile full`` report into ``docs/results.md`` and ``docs/results.json``
(a ``--profile libero`` report into ``docs/results-libero.md`` / ``.json``, rows by suite and task).

    python scripts/results_doc.py runs/<timestamp>/report.json --command "w2a demo --profile full"
    python scripts/results_doc.py runs/libero1/report.json --command "w2a demo --profile libero" \
        --name results-libero

The numbers are copied from the report, never edited; the markdown adds the machine, the exact
command, the phase timings and the reading of the result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.demo import UPPER_BOUND_ARMS, arms_table, stage1_table, version_table  # noqa: E402


def summary(report: dict) -> dict:
    by_task: dict[str, dict] = {}
    for e in report["evaluation"]:
        by_task.setdefault(e["task"], {})[e["arm"]] = e
    paired = report.get("paired", {})
    tasks = [{"task": t, "episodes": a["base"]["episodes"],
              "base_success_rate": a["base"]["success_rate"], "w2a_success_rate": a["w2a"]["success_rate"],
              "base_ci95": a["base"]["ci95"], "w2a_ci95": a["w2a"]["ci95"],
              "p_value": paired.get(t, {}).get("p_value"),  # w2a vs base, exact McNemar (paired)
              "arms": {arm: {"success_rate": e["success_rate"], "ci95": e["ci95"], "episodes": e["episodes"],
                             **({"upper_bound": True} if arm in UPPER_BOUND_ARMS else {})}
                       for arm, e in a.items()}}
             for t, a in by_task.items() if "base" in a and "w2a" in a]
    keys = ("v2a_top1_same_skill", "a2v_top1_same_skill", "v2a_top1_all", "chance_top1_same_skill",
            "chance_top1_all", "recon_mse")
    stage1 = {name: {k: m[k] for k in keys} for name, m in report["stage1"].items()}
    stage2 = {k: report["stage2"].get(k) for k in ("rollout_episodes", "updates", "final_policy_version",
                                                   "first_loss", "last_loss", "last_residual_abs_max",
                                                   "last_residual_rms", "success_by_policy_version")}
    arms = {arm: {k: v.get(k) for k in ("mode", "oracle", "rollout_episodes", "updates",
                                         "final_policy_version", "first_loss", "last_loss",
                                         "last_residual_abs_max", "last_residual_rms")}
            for arm, v in report.get("stage2_arms", {}).items()}
    return {"tasks": tasks, "stage1": stage1, "stage2": stage2, "stage2_arms": arms,
            "evaluation": report["evaluation"], "paired_arms": report.get("paired_arms", {}),
            "diagnostics": report.get("diagnostics"), "sync_rate": report["sync"]["sync_rate"],
            "world_model_eval": report.get("world_model_eval"),
            "profile": report["profile"], "phase_seconds": report["phase_seconds"],
            "total_seconds": report["total_seconds"]}


def machine() -> str:
    cpus = os.cpu_count()
    mem = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{platform.machine()} Linux, {cpus} CPU cores{mem}, no GPU, Python {platform.python_version()}"


SUITE_NAMES = {"libero_object": "LIBERO-Object", "libero_spatial": "LIBERO-Spatial", "libero_goal": "LIBERO-Goal",
               "libero_10": "LIBERO-Long (LIBERO-10)"}


def task_row_label(task: str) -> str:
    """'libero_object:3' -> 'LIBERO-Object | 3: pick up the bbq sauce …' (the paper's rows); a
    Meta-World task as it is, in one cell."""
    suite, sep, index = task.partition(":")
    if not sep or suite not in SUITE_NAMES:
        return task
    from services.robot_sim.libero_env import resolve_task

    return f"{SUITE_NAMES[suite]} | {index}: {resolve_task(suite, index).instruction}"


def render(s: dict, command: str, reading: str, commit: str = "") -> str:
    p = s["profile"]
    libero = p.get("sim") == "libero"
    extra = [t for t in p.get("base_tasks", []) if t not in p["tasks"]]
    evaluation = (f"evaluation: the suite's {p['eval_episodes']} official init states per task (LIBERO's "
                  "protocol; demos and rollouts come from sampled placements, never these), both arms on "
                  "the same ones" if libero else
                  f"evaluation: {p['eval_episodes']} episodes per task and arm on evaluation seeds never "
                  "used for anything else (both arms on the same seeds)")
    lines = [f"# World2Act on {'LIBERO' if libero else 'Meta-World'}: the `--profile {p['name']}` result", "",
             f"Command: `{command}` (on a clean checkout, after `make install`)"
             + (f", code at commit `{commit}`." if commit else "."), "",
             f"Machine: {machine()}. Total {s['total_seconds'] / 60:.0f} min.", "",
             f"Tasks: {', '.join(p['tasks'])}. Expert demos per task: {p['demos_per_task']} (world model, "
             f"Stage 1); the base VLA was trained on {p['base_demos_per_task']} per task, deliberately "
             f"few" + (f", on these and {len(extra)} more tasks it is not evaluated on ({', '.join(extra)}), "
                       "one base for the suite as LIBERO's policies are" if extra else "")
             + f". Rollouts: {p['rollout_rounds']} rounds x {p['rollout_episodes_per_task']} episodes per "
             f"task on rollout seeds; {evaluation}."
             + (f" The residual moves action dimensions {', '.join(map(str, p['residual_dims']))} only."
                if p.get("residual_dims") else ""), "",
             "## Before / after", "",
             *(["| suite | task | episodes per arm | base | base + World2Act | difference |",
                "| --- | --- | --- | --- | --- | --- |"] if libero else
               ["| task | episodes per arm | base | w2a (base + residual) | difference |",
                "| --- | --- | --- | --- | --- |"])]
    for t in s["tasks"]:
        p_text = "" if t.get("p_value") is None else f", p = {t['p_value']:.2g}"
        lines.append(f"| {task_row_label(t['task']) if libero else t['task']} | {t['episodes']} | "
                     f"{t['base_success_rate']:.2f} "
                     f"[{t['base_ci95'][0]:.2f}, {t['base_ci95'][1]:.2f}] | {t['w2a_success_rate']:.2f} "
                     f"[{t['w2a_ci95'][0]:.2f}, {t['w2a_ci95'][1]:.2f}] | "
                     f"{100 * (t['w2a_success_rate'] - t['base_success_rate']):+.0f} points{p_text} |")
    lines += ["", "Success rates with 95 % Wilson intervals; p: exact McNemar test on the paired seeds.", ""]
    lines += arms_table(s)
    lines += ["## Reading", "", reading, "",
              "## Stage 1 (held-out demos, chunk-level retrieval)", "", *stage1_table(s["stage1"])]
    s2 = s["stage2"]
    lines += ["", "## Stage 2", "",
              f"{s2['rollout_episodes']} rollout episodes, {s2['updates']} residual updates "
              f"(loss {s2['first_loss']:.3f} → {s2['last_loss']:.3f}), final residual v{s2['final_policy_version']}; "
              f"last update: max |a_res| {s2['last_residual_abs_max']:.3f}, RMS {s2['last_residual_rms']:.3f} "
              f"(bound {p['residual_scale']}).", "",
              *version_table(s2["success_by_policy_version"])]
    wm = s.get("world_model_eval")
    if wm:
        lines += ["", "## World model (held-out clips, latent MSE of the imagined next chunk)", "",
                  "| model | copy first frame | dataset mean | wrong skill | right beats wrong | VAE PSNR |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {wm['latent_mse_model']:.2e} | {wm['latent_mse_copy_frame']:.2e} | "
                  f"{wm['latent_mse_dataset_mean']:.2e} | {wm['latent_mse_wrong_skill']:.2e} | "
                  f"{100 * wm['right_beats_wrong_frac']:.0f} % of {wm['clips']} clips | {wm['vae_psnr_db']:.1f} dB |"]
    diag = (s.get("diagnostics") or {}).get("tasks")
    if diag:
        lines += ["", "## Link diagnostics (on-policy states of the base; `w2a diagnose links`)", "",
                  "| task | chunks | e_base | e_wm | e_real | e_copy | cos_grad wm | cos_grad real | "
                  "WM feature MSE | copy MSE | mean MSE | retrieval real / wm (chance) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for t, d in diag.items():
            lines.append(f"| {t} | {d['chunks']} | {d['e_base']:.3f} | {d['e_wm']:.3f} | {d['e_real']:.3f} | "
                         f"{d['e_copy']:.3f} | {d['cos_grad_wm']:.3f} | {d['cos_grad_real']:.3f} | "
                         f"{d['wm_feature_mse']:.2e} | {d['copy_feature_mse']:.2e} | {d['mean_feature_mse']:.2e} | "
                         f"{d['retrieval_top1_real']:.2f} / {d['retrieval_top1_wm']:.2f} "
                         f"({d['retrieval_chance']:.2f}) |")
    lines += ["", f"Skill sync rate (planner skills vs segmenter on the demos): {s['sync_rate']:.3f}.", "",
              "## Phase timings", "", "| phase | minutes |", "| --- | --- |"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in s["phase_seconds"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("report", type=Path)
    parser.add_argument("--command", default="w2a demo --profile full")
    parser.add_argument("--reading", type=Path, help="Markdown file with the reading of the result.")
    parser.add_argument("--wm-eval", type=Path, help="`w2a wm-eval --json` output, when the report has none.")
    parser.add_argument("--diagnostics", type=Path, help="`w2a diagnose links` output on the same run.")
    parser.add_argument("--name", default="results", help="docs/<name>.md and docs/<name>.json")
    parser.add_argument("--commit", default="", help="The commit the run's code was at.")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    if args.wm_eval:
        report["world_model_eval"] = json.loads(args.wm_eval.read_text())
    if args.diagnostics:
        report["diagnostics"] = json.loads(args.diagnostics.read_text())
    s = summary(report)
    reading = args.reading.read_text().strip() if args.reading else "(no reading given)"
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    keys = ("tasks", "stage1", "stage2", "stage2_arms", "paired_arms", "diagnostics", "sync_rate",
            "world_model_eval", "phase_seconds", "total_seconds")
    (docs / f"{args.name}.json").write_text(json.dumps({k: s[k] for k in keys}, indent=1) + "\n")
    (docs / f"{args.name}.md").write_text(render(s, args.command, reading, args.commit))
    print(f"wrote {docs / (args.name + '.md')} and {docs / (args.name + '.json')}")


if __name__ == "__main__":
    main()
