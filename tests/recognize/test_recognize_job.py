"""The recognition job over a real (untrained, seeded) blend: shards, resume, quarantine.

Learning is tested per stage and end to end in tests/dags/test_demo.py; here the
weights only need to be fixed, so that re-runs can be compared byte for byte.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from kzjobs.bundle import Bundle
from kzjobs.checkpoint import save_to_store
from kzjobs.classify.model import build_model, model_args
from kzjobs.detect.model import build_detector
from kzjobs.profile import load_profile
from kzjobs.recognize.job import MergeJob, RecognizeJob, parse_shard
from kzjobs.store import open_store
from kzjobs.synth import generate

VOCAB = ["U+3042", "U+3044", "seg_fp"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A store with a 3-page collection (one page corrupt) and a seeded bundle."""
    root = tmp_path_factory.mktemp("recognize")
    store = open_store(root)
    generate(store.child("coll"), books=1, pages_per_book=2, seed=3, fonts=["ipaex-mincho"],
             labelled=False)
    store.write_bytes("coll/images/synzA_009.jpg", b"\xff\xd8\xff\xe0 truncated")
    profile = load_profile("tiny")
    torch.manual_seed(0)
    det_cfg = profile.detect.model_copy(update={"score_threshold": 0.0})
    detector = build_detector(det_cfg, load_weights=False)
    save_to_store(store, "model/detect.pt",
                  {"config": det_cfg.model_dump(mode="json"), "model": detector.state_dict()})
    kind = profile.classify.kinds[0]
    args = model_args(kind, len(VOCAB), profile.classify)
    save_to_store(store, "model/classify.pt",
                  {"model_args": args, "model": build_model(args).state_dict(),
                   "vocabulary": VOCAB, "kind": kind, "fold": 0})
    store.write_json("model/vocabulary.json", {"U+3042": "あ", "U+3044": "い"})
    data = profile.model_dump(mode="json", by_alias=True)
    data["detect"]["score_threshold"] = 0.0  # an untrained detector still proposes boxes
    data["detect"]["detections_per_image"] = 30
    Bundle(profile="tiny", profile_data=data, detector=["detect.pt"],
           classifiers={kind: ["classify.pt"]}, vocabulary="vocabulary.json",
           ).save(store.child("model"))
    return root, store


def run(root, out, **kw):
    return RecognizeJob(store_uri=str(root), profile_name="tiny", model="model",
                        collection="coll", out=out, progress=False, **kw).run()


def outputs(store, out):
    """Every output but the ones that name their own location."""
    return {k: store.read_bytes(k) for k in store.list(out)
            if "/review/" not in k and not k.endswith("report.json")}


def test_shards_resume_and_merge_identically(setup):
    root, store = setup
    whole = run(root, "out/whole")
    assert whole["merge"]["pages_in"] == 3
    assert whole["merge"]["recognized"] == 2 and whole["merge"]["quarantined"] == 1
    report = store.read_json("out/whole/report.json")
    assert report["quarantine"][0]["item"] == "synzA_009"
    assert "decode" in report["quarantine"][0]["reason"]
    assert whole["merge"]["characters"] > 0

    # Two shards, the merge refusing until both are done.
    first = run(root, "out/sharded", shard="0/2")
    assert first["pages"] == 2 and "merge" not in first
    with pytest.raises(RuntimeError, match="no result yet"):
        MergeJob(store_uri=str(root), profile_name="tiny", collection="coll",
                 out="out/sharded").run()
    run(root, "out/sharded", shard="1/2")
    MergeJob(store_uri=str(root), profile_name="tiny", collection="coll",
             out="out/sharded").run()
    strip = len("out/sharded/")
    sharded = {k[strip:]: v for k, v in outputs(store, "out/sharded").items()}
    assert sharded == {k[len("out/whole/"):]: v for k, v in outputs(store, "out/whole").items()}

    # A crash after one page: the re-run reads only the missing page, same bytes.
    store.delete(store.list("out/whole/pages")[0])
    before = store.read_bytes("out/whole/submission.csv")
    again = run(root, "out/whole")
    assert (again["already_done"], again["recognized"]) == (2, 1)
    assert store.read_bytes("out/whole/submission.csv") == before


def test_cli_and_plain_image_folder(setup, tmp_path):
    root, store = setup
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "p1.jpg").write_bytes(store.read_bytes(store.list("coll/images")[0]))
    from kzjobs.cli import app

    result = CliRunner().invoke(app, ["recognize", "--model", "model", "--images", str(folder),
                                      "--out", str(tmp_path / "out"), "--store", str(root),
                                      "--profile", "tiny"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["merge"]["recognized"] == 1
    assert (tmp_path / "out" / "transcripts" / "p1.txt").exists()
    assert (tmp_path / "out" / "review" / "p1.html").read_text().count("<rect") > 0


@pytest.mark.parametrize("bad", ["1", "2/2", "-1/3", "a/b"])
def test_bad_shard(bad):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(bad)
