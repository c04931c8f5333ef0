"""The bench's pictures, drawn from its results' JSON: the ladder of a pipeline run
(``bench/results/pipeline.json`` -> ``ladder.png``) and the learning curves
(``learning-curve.json`` -> ``learning-curve.png``).

``.venv/bin/python -m bench.figures`` draws both again from the JSON files there are.
Drawn with matplotlib's object API (no pyplot: no global figure state), as
``kzjobs.method.figures``. This module imports no other bench module, so every bench
script can draw.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RESULTS = Path(__file__).parent / "results"
VERDICT_COLOURS = {"gain": "#1a8a3c", "loss": "#d12", "no measurable gain": "#888"}
LINE_COLOURS = ("#3a6ea5", "#d1762a", "#1a8a3c", "#8a3ca5")
_SET_TITLES = {"test": "test books (read once, reported)",
               "dev": "dev books (settings judged on them)",
               "heldout": "held-out books"}


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def ladder_sets(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{set: ladder}`` of a ``bench.pipeline`` result: its test and dev books' ladders,
    or the one held-out set of a run from before the dev/test split."""
    sets = {name: result[name]["quality"]["ladder"] for name in ("test", "dev")
            if "quality" in result.get(name, {})}
    if not sets and "quality" in result:
        sets = {"heldout": result["quality"]["ladder"]}
    return sets


def ladder_figure(result: Mapping[str, Any]) -> Figure:
    """Per set of books, a row: each rung's F1 as a dot (left), and its gain over the rung
    it is judged against with the 90% bootstrap interval over pages (right; grey where
    the interval holds 0). A rung without a gain (single models) has no bar on the right."""
    from matplotlib.figure import Figure

    sets = ladder_sets(result)
    if not sets:
        raise ValueError("no ladder in this result (quality.ladder, or dev/test.quality.ladder)")
    with_gains = any("gain" in rung for ladder in sets.values() for rung in ladder.values())
    rows = max(len(ladder) for ladder in sets.values())
    fig = Figure(figsize=(11.0 if with_gains else 7.0, len(sets) * (0.32 * rows + 1.2) + 0.4),
                 dpi=100, layout="constrained")
    axes = fig.subplots(len(sets), 2 if with_gains else 1, squeeze=False,
                        width_ratios=[1.0, 1.0] if with_gains else None)
    for row, (name, ladder) in enumerate(sets.items()):
        rungs = list(ladder)
        y = list(range(len(rungs)))[::-1]  # the first rung on top
        f1 = [ladder[r]["f1"] for r in rungs]
        ax = axes[row][0]
        ax.plot(f1, y, "o", color=LINE_COLOURS[0])
        for f, yy in zip(f1, y, strict=True):
            ax.annotate(f"{f:.4f}", (f, yy), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=8)
        low = min(f1)
        ax.set(yticks=y, yticklabels=rungs, xlabel="F1", title=_SET_TITLES.get(name, name),
               xlim=(low - 0.1 * (1.0 - low) - 0.005, 1.0))
        ax.grid(axis="x", alpha=0.3)
        if not with_gains:
            continue
        ax = axes[row][1]
        ax.axvline(0.0, color="#444", linewidth=0.8)
        for rung, yy in zip(rungs, y, strict=True):
            if not (gain := ladder[rung].get("gain")):
                continue
            lo, hi = gain["interval"]
            colour = VERDICT_COLOURS.get(gain["verdict"], "#888")
            ax.errorbar(gain["gain"], yy, xerr=[[gain["gain"] - lo], [hi - gain["gain"]]],
                        fmt="o", color=colour, capsize=3)
            ax.annotate(f"vs {gain['vs']}", (gain["gain"], yy), xytext=(0, 5),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        color="#555")
        ax.set(yticks=y, yticklabels=[], ylim=axes[row][0].get_ylim(),
               xlabel="gain in F1 (90% interval, bootstrap over pages)",
               title="gain over the rung it is judged against")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Ladder, profile {result.get('profile', '?')}"
                 f" (commit {result.get('machine', {}).get('commit', '?')})")
    return fig


def draw_ladder(result: Mapping[str, Any], out: Path) -> Path | None:
    """``ladder.png`` of a pipeline result; None when it holds no ladder yet (a run
    stopped before its first evaluation step)."""
    if not ladder_sets(result):
        return None
    return save_figure(ladder_figure(result), out)


def learning_curve_figure(variants: Mapping[str, Mapping[str, Any]],
                          target: float | None = None) -> Figure:
    """Dev F1 against training seconds, a line per start (``variants``: name ->
    ``{"points": [{"train_seconds", "dev_f1", "epoch"}, ...]}``, and optionally
    ``"seeds": {seed: points}``, each drawn faint); ``target``: a dev F1 to reach, drawn
    across."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    for colour, (name, variant) in zip(LINE_COLOURS * 4, variants.items(), strict=False):
        for seed_points in variant.get("seeds", {}).values():  # each seed's run, faint
            ax.plot([p["train_seconds"] for p in seed_points],
                    [p["dev_f1"] for p in seed_points], "-", color=colour, alpha=0.3,
                    linewidth=0.8)
        points: Sequence[Mapping[str, Any]] = variant["points"]
        x = [p["train_seconds"] for p in points]
        y = [p["dev_f1"] for p in points]
        seeds = len(variant.get("seeds", {}))
        ax.plot(x, y, "o-", color=colour, markersize=4,
                label=f"{name} (mean of {seeds} seeds)" if seeds > 1 else name)
        last = points[-1]
        ax.annotate(f"{last['dev_f1']:.3f} (epoch {last['epoch']})", (x[-1], y[-1]),
                    xytext=(-4, 6), textcoords="offset points", ha="right", fontsize=8,
                    color=colour)
    if target is not None:
        ax.axhline(target, color="#888", linestyle="--", linewidth=0.8,
                   label=f"scratch's final dev F1 {target:.3f}")
    ax.set(xlabel="training seconds (the Trainer's epoch time, evaluations left out)",
           ylabel="dev F1 (dev-font books)", ylim=(0.0, 1.0), xlim=(0.0, None),
           title="Learning curves of the demo classifier")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    results = Path(args.results)
    pipeline, curve = results / "pipeline.json", results / "learning-curve.json"
    if pipeline.exists() and (drawn := draw_ladder(json.loads(pipeline.read_text()),
                                                  results / "ladder.png")):
        print(drawn)
    if curve.exists():
        record = json.loads(curve.read_text())
        target = record.get("summary", {}).get("target_dev_f1")
        print(save_figure(learning_curve_figure(record["variants"], target),
                          results / "learning-curve.png"))


if __name__ == "__main__":
    main()
