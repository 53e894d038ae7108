"""The report's charts, drawn with matplotlib (headless Agg backend).

Every chart names its axes; legends sit outside the data; success rates carry their 95 %
intervals. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: servers, CI and containers
import matplotlib.pyplot as plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(path: str | Path, curves: dict[str, list[tuple[float, float]]], title: str,
                xlabel: str = "step", ylabel: str = "loss", size: tuple[float, float] = (6.4, 4.0)) -> Path:
    """(x, y) series on shared axes, one line (with markers when short) and legend entry each."""
    if not any(curves.values()):
        raise ValueError("nothing to plot")
    fig, ax = plt.subplots(figsize=size)
    for name, series in curves.items():
        if not series:
            continue
        xs, ys = zip(*series)
        ax.plot(xs, ys, label=name, marker="o" if len(series) <= 30 else None, markersize=3)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def plot_success_by_arm(path: str | Path, evaluation: list[dict], title: str = "Evaluation success rate") -> Path:
    """Per task, one bar per arm with its Wilson 95 % interval (``evaluation`` rows of the report)."""
    tasks = list(dict.fromkeys(e["task"] for e in evaluation))
    arms = list(dict.fromkeys(e["arm"] for e in evaluation))
    if not tasks:
        raise ValueError("nothing to plot")
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(tasks), 4.0))
    for a_i, arm in enumerate(arms):
        rows = {e["task"]: e for e in evaluation if e["arm"] == arm}
        xs = [t_i + (a_i - (len(arms) - 1) / 2) * width for t_i, t in enumerate(tasks) if t in rows]
        rates = [rows[t]["success_rate"] for t in tasks if t in rows]
        low = [rows[t]["success_rate"] - rows[t]["ci95"][0] for t in tasks if t in rows]
        high = [rows[t]["ci95"][1] - rows[t]["success_rate"] for t in tasks if t in rows]
        n = [rows[t]["episodes"] for t in tasks if t in rows]
        ax.bar(xs, rates, width, yerr=[low, high], capsize=3, label=f"{arm} (n = {min(n)}–{max(n)})"
               if min(n) != max(n) else f"{arm} (n = {n[0]})")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set(title=title, ylabel="success rate (95 % interval)", ylim=(0, 1))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def plot_success_by_version(path: str | Path, by_version: dict, title: str) -> Path:
    """Rollout success rate per policy version, with its Wilson 95 % interval and episode count
    (``by_version``: version -> {"success_rate", "episodes"}, the report's Stage 2 field)."""
    from w2a_models.stats import wilson_ci95

    if not by_version:
        raise ValueError("nothing to plot")
    versions = sorted(by_version, key=int)
    rates = [by_version[v]["success_rate"] for v in versions]
    counts = [int(by_version[v]["episodes"]) for v in versions]
    intervals = [wilson_ci95(round(r * n), n) for r, n in zip(rates, counts)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(versions) + 2.0), 4.0))
    xs = range(len(versions))
    ax.bar(xs, rates, 0.7, yerr=[[r - lo for r, (lo, _) in zip(rates, intervals)],
                                 [hi - r for r, (_, hi) in zip(rates, intervals)]], capsize=3)
    for x, n in zip(xs, counts):
        ax.annotate(f"n={n}", (x, 0.02), ha="center", fontsize=8)
    ax.set_xticks(list(xs), [f"v{v}" for v in versions])
    ax.set(title=title, xlabel="policy version that ended the episode", ylabel="rollout success rate (95 % interval)",
           ylim=(0, 1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
