"""The bench's pictures: the ladder and the learning curves drawn from their results' JSON,
and the curves' arithmetic (points from a job's history, seconds to reach an F1)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from bench.curves import curve_points, mean_points, seconds_to_reach, summary, variants_of
from bench.figures import draw_ladder, ladder_figure, learning_curve_figure, save_figure
from bench.figures import main as figures_main


def _gain(vs: str, gain: float, low: float, high: float, verdict: str) -> dict:
    return {"vs": vs, "gain": gain, "interval": [low, high], "level": 0.9, "resamples": 1000,
            "pages": 10, "verdict": verdict}


def _ladder(shift: float = 0.0) -> dict:
    return {
        "single resnet18 fold0": {"f1": 0.90 + shift, "by_book": {"a": 0.9}},
        "best single model": {"f1": 0.90 + shift, "by_book": {"a": 0.9}, "model": "resnet18 fold0"},
        "blend": {"f1": 0.92 + shift, "by_book": {"a": 0.92},
                  "gain": _gain("best single model", 0.02, 0.01, 0.03, "gain")},
        "+ level 2": {"f1": 0.921 + shift, "by_book": {"a": 0.921},
                      "gain": _gain("blend", 0.001, -0.002, 0.004, "no measurable gain")},
    }


PIPELINE = {"profile": "bench", "machine": {"commit": "abc1234"},
            "dev": {"quality": {"ladder": _ladder()}},
            "test": {"quality": {"ladder": _ladder(-0.01)}}}


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def test_the_ladder_is_drawn_per_set_with_its_gains(tmp_path):
    fig = ladder_figure(PIPELINE)
    # A row per set (test, dev), the F1 on the left and the gains with intervals right.
    axes = fig.get_axes()
    assert len(axes) == 4
    assert [a.get_title() for a in axes[::2]] == ["test books (read once, reported)",
                                                 "dev books (settings judged on them)"]
    top_down = sorted(axes[0].get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in top_down] == list(_ladder())
    # One error bar a rung with a gain: blend and + level 2.
    assert len(axes[1].containers) == 2
    width, height = _png_size(draw_ladder(PIPELINE, tmp_path / "ladder.png"))
    assert width > 0 and height > 0


def test_a_ladder_from_before_the_dev_test_split_and_without_gains_is_drawn(tmp_path):
    old = {"profile": "bench",
           "quality": {"ladder": {r: {k: v for k, v in f.items() if k != "gain"}
                                  for r, f in _ladder().items()}}}
    assert len(ladder_figure(old).get_axes()) == 1
    width, height = _png_size(draw_ladder(old, tmp_path / "ladder.png"))
    assert width > 0 and height > 0


def test_no_ladder_yet_draws_nothing(tmp_path):
    stopped = {"profile": "bench", "not_measured": ["dev/quality"]}
    assert draw_ladder(stopped, tmp_path / "ladder.png") is None
    assert not (tmp_path / "ladder.png").exists()
    with pytest.raises(ValueError, match="no ladder"):
        ladder_figure(stopped)


def test_the_learning_curve_is_drawn_a_line_per_start(tmp_path):
    variants = {
        "scratch": {"points": [{"epoch": 1, "train_seconds": 4.0, "dev_f1": 0.05},
                               {"epoch": 2, "train_seconds": 8.0, "dev_f1": 0.30}]},
        "pretrained": {"points": [{"epoch": 1, "train_seconds": 4.2, "dev_f1": 0.60},
                                  {"epoch": 2, "train_seconds": 8.1, "dev_f1": 0.70}],
                       "seeds": {0: [{"epoch": 1, "train_seconds": 4.2, "dev_f1": 0.6}]}},
    }
    fig = learning_curve_figure(variants, target=0.30)
    ax = fig.get_axes()[0]
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["scratch", "pretrained", "scratch's final dev F1 0.300"]
    width, height = _png_size(save_figure(fig, tmp_path / "curve.png"))
    assert width > 0 and height > 0


def test_figures_main_redraws_both_from_the_json(tmp_path, monkeypatch):
    (tmp_path / "pipeline.json").write_text(json.dumps(PIPELINE))
    points = [{"epoch": 1, "train_seconds": 4.0, "dev_f1": 0.5}]
    (tmp_path / "learning-curve.json").write_text(json.dumps(
        {"summary": {}, "variants": {"scratch": {"points": points}}}))
    monkeypatch.setattr("sys.argv", ["bench.figures", "--results", str(tmp_path)])
    figures_main()
    assert _png_size(tmp_path / "ladder.png")[0] > 0
    assert _png_size(tmp_path / "learning-curve.png")[0] > 0


def test_curve_points_sum_the_epochs_and_take_the_last_f1_from_the_final_prediction():
    history = [{"epoch": 0, "train_loss": 5.0}, {"epoch": 1, "valid_f1": 0.2},
               {"epoch": 2}, {"epoch": 3}]
    points = curve_points(history, {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}, final_f1=0.5, epochs=4)
    assert points == [{"epoch": 2, "train_seconds": 3.0, "dev_f1": 0.2},
                      {"epoch": 4, "train_seconds": 10.0, "dev_f1": 0.5}]


def test_seconds_to_reach_the_random_starts_final_f1():
    def run(seed: int, f1s: list[float]) -> dict:
        return {"seed": seed, "points": [{"epoch": e + 1, "train_seconds": 10.0 * (e + 1),
                                          "dev_f1": f} for e, f in enumerate(f1s)]}

    runs = {"scratch/seed0": run(0, [0.1, 0.2, 0.4]), "scratch/seed1": run(1, [0.1, 0.4, 0.6]),
            "pretrained/seed0": run(0, [0.4, 0.6, 0.7]),
            "pretrained/seed1": run(1, [0.6, 0.8, 0.9])}
    variants = variants_of(runs)
    assert variants["scratch"]["points"][1] == {"epoch": 2, "train_seconds": 20.0,
                                                "dev_f1": 0.3, "dev_f1_range": [0.2, 0.4]}
    assert set(variants["pretrained"]["seeds"]) == {0, 1}
    found = summary(variants)
    assert found["target_dev_f1"] == 0.5  # scratch's mean after its last epoch
    assert found["seconds_to_reach"] == {"pretrained": 10.0, "scratch": 30.0}
    assert found["pretrained_share_of_scratch_seconds"] == pytest.approx(1 / 3, abs=1e-3)
    assert seconds_to_reach(variants["scratch"]["points"], 0.95) is None
    # Only the epochs every seed evaluated are averaged.
    assert [p["epoch"] for p in mean_points([run(0, [0.1, 0.2])["points"],
                                             run(1, [0.3])["points"]])] == [1]
