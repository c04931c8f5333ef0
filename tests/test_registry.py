"""The kz-recognizer registry: whole blends as pyfunc versions, on the embedded default
(SQLite + local files) and on the production shape (PostgreSQL + S3, directly and
through an MLflow tracking server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from kzjobs.core.settings import get_settings
from kzjobs.data.dataset import Dataset
from tests.conftest import free_port, wait_for_http


def _evaluation(store, heldout: str, f1: float) -> dict:
    from kzjobs.release.registry import dataset_version

    return {"dataset": heldout, "dataset_version": dataset_version(Dataset.open(heldout, store)),
            "f1": f1, "by_book": {"ha": {"f1": f1 - 0.1}, "hb": {"f1": f1 + 0.1}}}


def _register(store, make_bundle, make_heldout, *, tag="a", f1=0.5):
    from kzjobs.release import jobs as release

    make_bundle(store, f"runs/{tag}", tag=tag)
    make_heldout(store, "heldout")
    ev = _evaluation(store, "heldout", f1)
    return release.register_bundle(f"runs/{tag}", store, evaluation=ev, dataset="heldout",
                                    dataset_version=ev["dataset_version"])


def _check_roundtrip(store, files: dict, version: int) -> None:

    from kzjobs.core.store import open_store
    from kzjobs.release import registry
    from kzjobs.release.bundle import Bundle

    v = registry.get_version("candidate")
    assert int(v.version) == version
    assert v.tags["profile"] == "tiny"
    assert v.tags["heldout"] == "heldout"
    assert float(v.tags["f1"]) == pytest.approx(0.5)
    assert float(v.tags["f1.book.ha"]) == pytest.approx(0.4)
    assert float(v.tags["f1.book.hb"]) == pytest.approx(0.6)
    assert v.tags["git_commit"]
    assert v.tags["dataset_version"] == v.tags["heldout_version"]
    assert float(v.tags[registry.eval_tag(v.tags["heldout_version"])]) == pytest.approx(0.5)

    # The weights come back byte for byte, and the manifest with them.
    local = open_store(registry.download_bundle("models:/kz-recognizer@candidate"))
    for key, text in files.items():
        assert local.read_text(key) == text
    assert Bundle.load(local).detector == ["detect/fold0/model.pt", "detect/fold1/model.pt"]

    # A pyfunc of the installed kzjobs.release.registry_model: its signature, and no pickle and
    # no code anywhere in the version.
    model = registry.load_model("models:/kz-recognizer@candidate")
    assert model.metadata.get_input_schema().input_names() == ["image_id", "image"]
    assert model.metadata.get_output_schema().input_names() == ["image_id", "labels", "text"]
    pyfunc = model.metadata.flavors["python_function"]
    assert pyfunc["loader_module"] == "kzjobs.release.registry_model"
    root = local.root.parent.parent  # the whole downloaded model folder
    assert not list(root.rglob("*.pkl")) and not list(root.rglob("*.pickle"))
    assert not list(root.rglob("*.py"))


def test_register_on_the_embedded_default(tmp_path, make_bundle, make_heldout):
    from kzjobs.core.store import open_store

    store = open_store(tmp_path / "store")
    out = _register(store, make_bundle, make_heldout)
    assert out == out | {"version": 1, "reused": False, "alias": "candidate"}
    home = get_settings().home
    assert (home / "mlflow.db").is_file()
    assert list((home / "mlartifacts").rglob("bundle.json"))  # never ./mlruns
    _, files = make_bundle(open_store(tmp_path / "other"), "x", tag="a")
    _check_roundtrip(store, files, 1)


def test_register_on_postgres_and_s3_is_idempotent(mlflow_on_postgres, tmp_path, make_bundle,
                                                   make_heldout):
    import boto3

    from kzjobs.core.store import open_store
    from kzjobs.release import registry

    store = open_store(tmp_path / "store")
    first = _register(store, make_bundle, make_heldout)
    again = _register(store, make_bundle, make_heldout)  # a re-run after a crash
    assert (first["version"], again["version"], again["reused"]) == (1, 1, True)
    second = _register(store, make_bundle, make_heldout, tag="b", f1=0.5)
    assert second["version"] == 2
    assert int(registry.get_version("candidate").version) == 2

    # The tracking data is in PostgreSQL and the weights are in the S3 bucket.
    assert registry.tracking_uri().startswith("postgresql+psycopg2://")
    bucket = mlflow_on_postgres.removeprefix("s3://")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert sum(k.endswith("bundle/bundle.json") for k in keys) == 2
    assert any(k.endswith("bundle/detect/fold1/model.pt") for k in keys)
    from mlflow import MlflowClient

    local = f"sqlite:///{get_settings().home / 'mlflow.db'}"  # the embedded default's DB
    if (get_settings().home / "mlflow.db").exists():
        assert MlflowClient(local, local).search_registered_models() == []

    registry.client().set_registered_model_alias("kz-recognizer", "candidate", "1")
    _, files = make_bundle(open_store(tmp_path / "other"), "x", tag="a")
    _check_roundtrip(store, files, 1)


def test_register_job_reads_the_evaluation_from_the_store(tmp_path, make_bundle, make_heldout):
    from kzjobs.release.jobs import RegisterJob
    from kzjobs.release.registry import get_version

    store_dir = tmp_path / "store"
    job = RegisterJob(store_uri=str(store_dir), profile_name="tiny", bundle="runs/a",
                      evaluation="runs/a/evaluation.json", dataset="heldout")
    make_bundle(job.store, "runs/a", tag="a")
    make_heldout(job.store, "heldout")
    job.store.write_json("runs/a/evaluation.json", _evaluation(job.store, "heldout", 0.75))
    out = job.run()
    assert out["version"] == 1 and out["f1"] == 0.75
    assert get_version(1).tags["bundle_source"] == str(store_dir / "runs" / "a")


def test_a_bundle_is_refused_when_a_file_is_missing(tmp_path, make_bundle):
    from kzjobs.core.store import open_store
    from kzjobs.release.bundle import Bundle
    from kzjobs.release.model_ref import open_bundle

    store = open_store(tmp_path)
    bundle, _ = make_bundle(store, "run")
    store.delete("run/level2/fold1/xgb.ubj")
    with pytest.raises(FileNotFoundError, match=r"xgb\.ubj"):
        bundle.save(store.child("run"))
    with pytest.raises(FileNotFoundError, match=r"lacks \['level2/fold1/xgb\.ubj'\]"):
        open_bundle("run", store)  # loading checks every file too
    loaded = Bundle.load(store.child("run"), verify=False)  # the manifest alone
    assert loaded == bundle and loaded.missing(store.child("run")) == ["level2/fold1/xgb.ubj"]
    with pytest.raises(FileNotFoundError, match=r"no bundle\.json"):
        Bundle.load(store.child("nothing"))


def test_a_relative_reference_is_a_store_key_first_then_a_local_folder(tmp_path, make_bundle,
                                                                         monkeypatch):
    from kzjobs.core.store import open_store
    from kzjobs.release.model_ref import bundle_root

    store = open_store(tmp_path / "store")
    make_bundle(store, "runs/a")
    folder = tmp_path / "cwd" / "out" / "model"
    make_bundle(open_store(folder.parent), "model")
    monkeypatch.chdir(tmp_path / "cwd")
    assert bundle_root("runs/a", store).uri == str(tmp_path / "store" / "runs" / "a")
    assert bundle_root("out/model", store).uri == str(folder)  # not in the store: the folder
    make_bundle(store, "out/model")  # in both: the store's, as before
    assert bundle_root("out/model", store).uri == str(tmp_path / "store" / "out" / "model")
    assert bundle_root("nowhere", store).uri == str(tmp_path / "store" / "nowhere")


@pytest.mark.parametrize(("level2_f1", "used"), [(0.40, False), (0.60, True)])
def test_the_bundle_keeps_level2_only_when_it_beat_the_blend(tmp_path, make_bundle, make_oof,
                                                              make_heldout, level2_f1, used):
    from kzjobs.core.store import open_store
    from kzjobs.release.jobs import BundleJob
    from kzjobs.release.model_ref import open_bundle

    store = open_store(tmp_path)
    make_bundle(store, "run")
    store.delete("run/bundle.json")  # the run's files, before BundleJob names them
    make_heldout(store, "train")
    store.write_json("run/folds.json", {"books": {"ha": 0, "hb": 1}})
    store.write_json("run/level2/meta.json", {"folds": [0, 1], "kinds": ["resnet18"]})
    store.write_json("run/level2/vocab.json", ["U+3042", "U+3044", "seg_fp"])
    make_oof(store, "run", {0: ["U+3042"], 1: ["U+3044"]})
    store.write_json("run/level2/report.json", {"blend_oof_f1": 0.5,
                                                "level2_oof_f1": level2_f1})
    out = BundleJob(store_uri=str(tmp_path), profile_name="tiny", run_prefix="run",
                    dataset="train").run()
    bundle, _ = open_bundle("run", store)
    assert out["level2"] is used and bundle.metrics["level2_used"] == float(used)
    assert bool(bundle.level2.lightgbm) is used and bool(bundle.level2.xgboost) is used
    assert ("level2/fold0/lgb.txt" in bundle.files()) is used
    assert bundle.classifiers == {"resnet18": ["classify/resnet18/fold0/model.pt",
                                               "classify/resnet18/fold1/model.pt"]}


def test_the_bundle_carries_the_shifts_its_adaptation_fitted(tmp_path, make_bundle, make_oof,
                                                              make_heldout):
    from kzjobs.core.keys import RunKeys
    from kzjobs.core.store import open_store
    from kzjobs.method.pseudo import default_report_key
    from kzjobs.release.jobs import BundleJob
    from kzjobs.release.model_ref import open_bundle

    layout = RunKeys("")
    assert default_report_key(layout.pseudo_labels) == layout.pseudo_report  # where it writes

    def bundle_of(run, report):
        store = open_store(tmp_path)
        make_bundle(store, run)
        store.delete(f"{run}/bundle.json")
        store.write_json(f"{run}/folds.json", {"books": {"ha": 0, "hb": 1}})
        store.write_json(f"{run}/level2/meta.json", {"folds": [0, 1], "kinds": ["resnet18"]})
        store.write_json(f"{run}/level2/vocab.json", ["U+3042", "seg_fp"])
        # The OOF blend calls あ three times, い once and seg_fp once (left out of shares).
        make_oof(store, run, {0: ["U+3042", "U+3042", "seg_fp"], 1: ["U+3044", "U+3042"]})
        if report is not None:
            store.write_json(RunKeys(run).pseudo_report, report)
        BundleJob(store_uri=str(tmp_path), profile_name="tiny", run_prefix=run,
                  dataset="train").run()
        return open_bundle(run, store)[0]

    make_heldout(open_store(tmp_path), "train")
    books = {"ta": {"U+3042": 1.5, "U+3044": -0.5}, "tb": {}}
    adapted = bundle_of("adapted", {"seg_fp_shift": {"shift": 2.5, "rule": "fit"},
                                    "class_shift": {"books": books, "winners_changed": 9}})
    assert adapted.seg_fp_shift == 2.5 and adapted.metrics["seg_fp_shift"] == 2.5
    assert adapted.class_shifts == books and adapted.metrics["class_shift_books"] == 2
    # What recognition fits a new book's shifts to.
    assert adapted.class_shares == {"U+3042": 0.75, "U+3044": 0.25}
    # No incoming collection: tiny's rule is "fit", with nothing to fit on.
    plain = bundle_of("plain", None)
    assert plain.seg_fp_shift == 0.0 and plain.class_shifts == {}


def test_jobs_starting_together_share_one_fresh_embedded_registry(tmp_path):
    # Two folds start side by side on a new SQLite database: both create its schema and
    # their experiment; neither may fail, and they get the same experiment.
    code = ("from kzjobs.release import registry; "
            "print(registry.experiment_id(registry.client(), 'kz-race'))")
    env = {**os.environ, "KZ_HOME": str(tmp_path)}
    env.pop("KZ_MLFLOW_URI", None)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1


def test_register_through_a_tracking_server(pg_uri, s3_env, s3_endpoint, tmp_path,
                                            monkeypatch, make_bundle, make_heldout):
    """Production: the jobs talk to `mlflow server` (PostgreSQL + S3), never to S3 for MLflow."""
    import boto3

    from kzjobs.core.store import open_store

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", pg_uri,
         "--artifacts-destination", f"{s3_env}/artifacts", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        # No GenAI job workers: they would be children outliving the server.
        env={**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: stopped whole below
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", server, "mlflow server", log=server.stderr.read)
        monkeypatch.setenv("KZ_MLFLOW_URI", url)
        get_settings.cache_clear()
        store = open_store(tmp_path / "store")
        assert _register(store, make_bundle, make_heldout)["version"] == 1
        bucket = s3_env.removeprefix("s3://")
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
        assert any(k.startswith("artifacts/") and k.endswith("bundle/bundle.json") for k in keys)
        _, files = make_bundle(open_store(tmp_path / "other"), "x", tag="a")
        _check_roundtrip(store, files, 1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_registered_pyfunc_reads_pages_as_the_recognize_job_does(tmp_path):
    """A seeded blend trained to adapt, registered and loaded back as a pyfunc: its labels
    for a batch of page files are the recognize job's submission rows for the same pages,
    adapting to the book as the job does by default, and not with ``adapt`` False."""
    import pandas as pd

    from bench.workload import write_seeded_bundle
    from kzjobs.core.store import open_store
    from kzjobs.data.format import parse_points, read_submission
    from kzjobs.recognize.job import RecognizeJob
    from kzjobs.release import jobs as release
    from kzjobs.release import registry
    from kzjobs.release.bundle import Bundle
    from kzjobs.synth import generate

    store = open_store(tmp_path / "store")
    generate(store.child("coll"), books=1, pages_per_book=3, seed=3, fonts=["ipaex-mincho"])
    write_seeded_bundle(store, "model")
    # Trained to adapt, against shares its seeded models are far from: they call U+3042
    # on nearly every box, and U+3044 is expected most.
    bundle = Bundle.load(store.child("model"))
    profile = bundle.profile_data | {"pseudo": bundle.profile_data["pseudo"]
                                     | {"class_shift": True}}
    bundle.model_copy(update={"profile_data": profile,
                              "class_shares": {"U+3044": 0.8, "U+3042": 0.2}}
                      ).save(store.child("model"))
    ev = _evaluation(store, "coll", 0.5)
    release.register_bundle("model", store, evaluation=ev, dataset="coll",
                             dataset_version=ev["dataset_version"])
    ds = Dataset.open("coll", store)
    ids = ds.image_ids()
    pages = pd.DataFrame({"image_id": ids,
                          "image": [f"{ds.store.uri}/{ds.image_keys[i]}" for i in ids]})
    model = registry.load_model("models:/kz-recognizer@candidate")

    read = {}
    for adapt in (None, False):
        out = f"out/{adapt}"
        summary = RecognizeJob(store_uri=store.uri, model="model", collection="coll", out=out,
                               progress=False, adapt=adapt).run()
        assert ("adaptation" in summary) == (adapt is None)
        expected = read_submission(store.read_bytes(f"{out}/submission.csv"))
        got = model.predict(pages, params={} if adapt is None else {"adapt": adapt})
        assert list(got["image_id"]) == ids
        assert sum(len(expected[i]) for i in ids) > 0

        # The same points in the same (reading) order, and the job's transcripts as text.
        labels = dict(zip(got["image_id"], got["labels"], strict=True))
        read[adapt] = [parse_points(i, labels[i]) for i in ids]
        assert read[adapt] == [expected[i] for i in ids]
        text = dict(zip(got["image_id"], got["text"], strict=True))
        assert [text[i] for i in ids] == [store.read_text(f"{out}/transcripts/{i}.txt")
                                          for i in ids]
    def count(points, code="U+3044"):
        return sum(p.code == code for page in points for p in page)

    assert count(read[None]) > count(read[False])  # the adaptation reached the pages
