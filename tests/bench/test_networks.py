"""bench.networks: a profile's networks with random weights, read as recognize loads them
and with their batch norms in place, on generated pages."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from bench import networks
from kzjobs.core.profile import load_profile


def test_both_variants_score_boxes_alike_and_only_the_loaded_one_has_no_batch_norm():
    from kzjobs.classify.predict import predict_logits

    profile = load_profile("tiny")
    (image, boxes), = networks.synthetic_pages(1, seed=3)
    assert len(boxes) > 10
    loaded, kept = (networks.networks(profile, 40, folded=f) for f in (True, False))
    norms = [sum(isinstance(m, torch.nn.BatchNorm2d) for m in pair[1].modules())
             for pair in (loaded, kept)]
    assert norms[0] == 0 and norms[1] > 10
    fp32 = profile.classify.model_copy(update={"amp": False})  # bf16 rounding is not at issue
    logits = [predict_logits(pair[1], np.asarray(image), boxes, fp32,
                             device=torch.device("cpu")) for pair in (loaded, kept)]
    assert logits[0].shape == (len(boxes), 40)
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-3, atol=1e-3)


def test_the_figures_file_has_every_variant_and_threads_and_a_bound_from_its_seconds(
        tmp_path, monkeypatch):
    out = tmp_path / "networks.json"
    monkeypatch.setattr(sys, "argv", ["bench.networks", "--profile", "tiny", "--pages", "1",
                                      "--rounds", "1", "--classes", "30", "--out", str(out)])
    networks.main()
    result = json.loads(out.read_text())
    cores = torch.get_num_threads()
    assert {(v["name"], v["torch_threads"]) for v in result["variants"]} == {
        (name, threads) for name in ("as loaded", "batch norms not folded")
        for threads in {1, cores}}
    for v in result["variants"]:
        seconds = v["seconds_per_page"]
        assert seconds["detect"] > 0 and seconds["classify"] > 0
        page = seconds["detect"] + v["classifiers"] * seconds["classify"]
        workers = cores if v["torch_threads"] == 1 else 1
        assert abs(v["pages_per_second_bound"] - workers / page) < 0.01 * workers / page + 1e-3
