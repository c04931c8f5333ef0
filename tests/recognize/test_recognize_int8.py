"""Classifiers read with int8 trunks (``classify.int8_trunk``): the bundle job stores the
trunks, recognition rebuilds them from the bundle, and shards read with the same bytes.

The weights are seeded, not trained: how closely an int8 trunk reads as the float model
does is tested on the trained tiny classifier (tests/classify/test_classify_quantize.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from bench.workload import VOCAB
from kzjobs.classify.model import RoIClassifier, build_model, model_args
from kzjobs.classify.predict import predict_logits
from kzjobs.classify.quantize import Int8Classifier, int8_supported
from kzjobs.core.checkpoint import save_to_store
from kzjobs.core.profile import load_profile
from kzjobs.core.store import open_store
from kzjobs.data.dataset import Dataset
from kzjobs.detect.model import build_detector
from kzjobs.recognize.job import MergeJob, RecognizeJob
from kzjobs.recognize.recognizer import Recognizer
from kzjobs.release.bundle import Bundle, copy_bundle
from kzjobs.release.jobs import BundleJob
from kzjobs.release.model_ref import open_bundle
from kzjobs.synth import generate
from tests.conftest import write_test_oof

pytestmark = pytest.mark.skipif(not int8_supported(), reason="no x86 int8 kernels")

RUN = "runs/int8"


def profile_file(path, *, int8: bool) -> str:
    data = load_profile("tiny").model_dump(mode="json", by_alias=True)
    data["classify"]["int8_trunk"] = int8
    data["detect"]["score_threshold"] = 0.0  # untrained: still proposes boxes
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A training run's files (seeded classifiers, one per fold), its labelled training
    books, an unlabelled collection, and the bundle job run with ``int8_trunk`` on."""
    root = tmp_path_factory.mktemp("int8")
    store = open_store(root)
    generate(store.child("train"), books=2, pages_per_book=1, seed=5, fonts=["ipaex-mincho"])
    generate(store.child("coll"), books=1, pages_per_book=2, seed=3, fonts=["ipaex-mincho"],
             labelled=False)
    int8, plain = profile_file(root / "int8.yaml", int8=True), profile_file(
        root / "float.yaml", int8=False)
    tiny = load_profile(plain)
    torch.manual_seed(0)
    run = store.child(RUN)
    for fold in (0, 1):
        save_to_store(run, f"detect/fold{fold}/model.pt", {
            "config": tiny.detect.model_dump(mode="json"),
            "model": build_detector(tiny.detect, load_weights=False).state_dict()})
        args = model_args("resnet18", len(VOCAB), tiny.classify)
        save_to_store(run, f"classify/resnet18/fold{fold}/model.pt", {
            "model_args": args, "model": build_model(args).state_dict(), "vocabulary": VOCAB,
            "kind": "resnet18", "fold": fold})
    run.write_json("folds.json", {"books": {"synaA": 0, "synaB": 1}})
    run.write_json("level2/meta.json", {"folds": [0, 1], "kinds": ["resnet18"]})
    run.write_json("level2/vocab.json", VOCAB)
    # No level 2 (it did not beat the blend): the blend's top class decides.
    run.write_json("level2/report.json", {"blend_oof_f1": 0.5, "level2_oof_f1": 0.4})
    write_test_oof(store, RUN, {0: ["U+3042"], 1: ["U+3044"]})
    out = BundleJob(store_uri=str(root), profile_name=int8, run_prefix=RUN,
                    dataset="train").run()
    return root, store, out, int8, plain


def test_the_bundle_job_stores_an_int8_trunk_for_each_classifier(setup, tmp_path):
    _, store, out, _, _ = setup
    bundle, run = open_bundle(RUN, store)
    checkpoints = bundle.classifiers["resnet18"]
    assert set(bundle.int8_trunks) == set(checkpoints)
    assert bundle.int8_trunks[checkpoints[0]] == "classify/resnet18/fold0/model.int8.pt"
    assert set(bundle.int8_trunks.values()) <= set(out["files"]) == set(bundle.files())
    assert not bundle.missing(run)
    # A copy (what the registry logs) carries them, and loads.
    copied = open_store(copy_bundle(bundle, run, tmp_path / "copy"))
    assert Bundle.load(copied).int8_trunks == bundle.int8_trunks
    assert all(copied.exists(p) for p in bundle.int8_trunks.values())


def test_recognition_reads_with_the_int8_trunks_only_when_the_profile_asks(setup):
    _, store, _, int8, plain = setup
    bundle, run = open_bundle(RUN, store)
    quantized = Recognizer.from_bundle(bundle, run, profile=int8, device="cpu")
    floating = Recognizer.from_bundle(bundle, run, profile=plain, device="cpu")
    assert [type(c.model) for c in quantized.classifiers] == [Int8Classifier] * 2
    assert [type(c.model) for c in floating.classifiers] == [RoIClassifier] * 2
    # Both read a page's boxes to nearly the same logits (the trunks' ranges were
    # observed on the training books, and stored: nothing is calibrated at load).
    coll = Dataset.open("coll", store)
    image_id = coll.image_ids()[0]
    image = np.asarray(coll.read_image(image_id))
    boxes = floating.detect(coll.read_image(image_id))[:64]
    assert len(boxes) > 10
    cfg = floating.profile.classify
    for q, f in zip(quantized.classifiers, floating.classifiers, strict=True):
        a = predict_logits(q.model, image, boxes, cfg, device=torch.device("cpu"))
        b = predict_logits(f.model, image, boxes, cfg, device=torch.device("cpu"))
        assert float((a - b).norm() / b.norm()) < 0.1  # 0.03 when written


def test_shards_read_with_the_same_int8_trunks(setup):
    root, store, _, int8, _ = setup

    def outputs(out):
        return {k.removeprefix(out): store.read_bytes(k) for k in store.list(out)
                if "/review/" not in k and not k.endswith("report.json")}

    def run(out, **kw):
        return RecognizeJob(store_uri=str(root), profile_name=int8, collection="coll",
                            model=RUN, out=out, progress=False, **kw).run()

    whole = run("out/whole")
    assert whole["merge"]["recognized"] == 2 and whole["merge"]["characters"] > 0
    run("out/sharded", shard="0/2")
    run("out/sharded", shard="1/2")
    MergeJob(store_uri=str(root), profile_name=int8, collection="coll",
             out="out/sharded").run()
    assert outputs("out/sharded") == outputs("out/whole")


def test_int8_reading_of_a_bundle_made_without_trunks_is_a_clear_error(setup, tmp_path):
    _, store, _, int8, _ = setup
    bundle, run = open_bundle(RUN, store)
    without = tmp_path / "without"
    copy_bundle(bundle.model_copy(update={"int8_trunks": {}}), run, without)
    with pytest.raises(ValueError, match="no int8 trunk for"):
        Recognizer.from_bundle(*open_bundle(str(without)), profile=int8, device="cpu")
