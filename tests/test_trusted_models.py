"""Trusted models: a bundle's files are checked against the sha256 its manifest records, and
a registered version runs only the installed kzjobs's code, never code from its artifact.

Each tampering below is refused with a clear error, on a plain bundle path and through the
registry (the artifact store of the embedded default, rewritten as a writer of it could),
and promotion rejects a tampered candidate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kzjobs.core.settings import get_settings
from tests.conftest import register_test_bundle

WEIGHT = "detect/fold0/model.pt"


@pytest.fixture
def store(tmp_path):
    from kzjobs.core.store import open_store

    return open_store(tmp_path / "store")


def _manifest(root: Path) -> dict:
    return json.loads((root / "bundle.json").read_text())


def _write_manifest(root: Path, data: dict) -> None:
    (root / "bundle.json").write_text(json.dumps(data))


# ---- a plain bundle path -----------------------------------------------------------------


def test_a_clean_bundle_records_every_file_hash_and_loads(store, make_bundle):
    import hashlib

    from kzjobs.release.model_ref import open_bundle

    bundle, files = make_bundle(store, "run")
    loaded, _ = open_bundle("run", store)
    assert loaded == bundle
    assert set(loaded.sha256) == set(loaded.files()) == set(files)
    assert loaded.sha256[WEIGHT] == hashlib.sha256(files[WEIGHT].encode()).hexdigest()


def test_a_tampered_weight_file_is_refused(store, make_bundle):
    from kzjobs.release.bundle import BundleIntegrityError
    from kzjobs.release.model_ref import open_bundle

    make_bundle(store, "run")
    store.write_text(f"run/{WEIGHT}", "weights of someone else")
    with pytest.raises(BundleIntegrityError, match=rf"{WEIGHT} has sha256 .* changed after"):
        open_bundle("run", store)


@pytest.mark.parametrize("tamper", ["changed hash", "added file", "hash of an unused file",
                                    "no hashes", "old format", "unknown field"])
def test_a_tampered_manifest_is_refused(store, make_bundle, tamper):
    from kzjobs.release.bundle import BundleIntegrityError
    from kzjobs.release.model_ref import open_bundle

    make_bundle(store, "run")
    root = Path(store.child("run").uri)
    data = _manifest(root)
    if tamper == "changed hash":
        data["sha256"][WEIGHT] = "0" * 64
        error = rf"{WEIGHT} has sha256 .* records 0{{64}}"
    elif tamper == "added file":  # a file the blend would load, not recorded when written
        (root / "detect/fold9").mkdir(parents=True)
        (root / "detect/fold9/model.pt").write_text("extra")
        data["detector"].append("detect/fold9/model.pt")
        error = r"without a recorded sha256: \['detect/fold9/model\.pt'\]"
    elif tamper == "hash of an unused file":
        data["sha256"]["notes.txt"] = "0" * 64
        error = r"does not use: \['notes\.txt'\]"
    elif tamper == "no hashes":
        data["sha256"] = {}
        error = r"without a recorded sha256"
    elif tamper == "old format":  # written before bundles recorded hashes
        data["format"] = 1
        del data["sha256"]
        error = r"bundle format 1 .* before bundles recorded file hashes"
    else:
        data["loader"] = "evil"
        error = r"not a valid manifest"
    _write_manifest(root, data)
    with pytest.raises(BundleIntegrityError, match=error):
        open_bundle("run", store)


def test_saving_again_records_the_files_as_they_are(store, make_bundle):
    # A bundle changed on purpose (the tests and benches re-save with new shifts) is
    # re-hashed by save; only a change made behind the manifest's back is refused.
    from kzjobs.release.bundle import Bundle
    from kzjobs.release.model_ref import open_bundle

    make_bundle(store, "run")
    store.write_text(f"run/{WEIGHT}", "retrained")
    root = store.child("run")
    Bundle.load(root, verify=False).model_copy(update={"seg_fp_shift": 1.0}).save(root)
    assert open_bundle("run", store)[0].seg_fp_shift == 1.0


# ---- through the registry ----------------------------------------------------------------




def _artifact(version: int) -> Path:
    """The version's model folder in the embedded default's artifact store (what a writer of
    the artifact store rewrites), after dropping the jobs' local download of it."""
    from kzjobs.release.registry import get_version, model_name

    home = get_settings().home
    shutil.rmtree(home / "models" / model_name() / str(version), ignore_errors=True)
    model_id = get_version(version).source.rstrip("/").split("/")[-1]  # models:/m-...
    (found,) = [p for p in (home / "mlartifacts").rglob(model_id) if (p / "artifacts").is_dir()]
    return found / "artifacts"


def test_a_clean_version_loads_through_the_registry(store):
    from kzjobs.release import registry
    from kzjobs.release.model_ref import open_bundle

    v = register_test_bundle(store)
    model = registry.load_model("models:/kz-recognizer@candidate")
    pyfunc = model.metadata.flavors["python_function"]
    assert pyfunc["loader_module"] == "kzjobs.release.registry_model"
    bundle, _ = open_bundle(f"models:/kz-recognizer/{v}")
    assert bundle.sha256 == open_bundle("runs/a", store)[0].sha256
    # no code travels with a version
    assert not list(_artifact(v).rglob("*.py"))


def test_a_tampered_weight_in_the_registry_is_refused(store):
    from kzjobs.release import registry
    from kzjobs.release.bundle import BundleIntegrityError
    from kzjobs.release.model_ref import open_bundle

    v = register_test_bundle(store)
    (_artifact(v) / "data/bundle" / WEIGHT).write_text("weights of someone else")
    for load in (registry.load_model, open_bundle):  # the pyfunc, and the jobs' path
        with pytest.raises(BundleIntegrityError, match=rf"{WEIGHT} has sha256"):
            load(f"models:/kz-recognizer/{v}")
    # the jobs' local copy is checked on every use too
    local = registry.download_model(f"models:/kz-recognizer/{v}")[0] / "data/bundle"
    assert (local / WEIGHT).read_text() == "weights of someone else"


def test_a_rewritten_manifest_in_the_registry_is_refused(store):
    # A writer of the artifact store swaps a weight and its hash together: the manifest is
    # consistent, but not the one registered (its sha256 is a version tag, in the database).
    import hashlib

    from kzjobs.release import registry
    from kzjobs.release.model_ref import open_bundle

    v = register_test_bundle(store)
    root = _artifact(v) / "data/bundle"
    (root / WEIGHT).write_text("weights of someone else")
    data = _manifest(root)
    data["sha256"][WEIGHT] = hashlib.sha256(b"weights of someone else").hexdigest()
    _write_manifest(root, data)
    for load in (registry.load_model, open_bundle):
        with pytest.raises(registry.UntrustedModelError,
                           match=r"bundle_sha256 tag .* not the one registered"):
            load(f"models:/kz-recognizer/{v}")


EVIL = """\
from pathlib import Path
Path({marker!r}).write_text("ran")
class Model:
    def predict(self, model_input, params=None):
        return model_input
def _load_pyfunc(data_path, model_config=None):
    return Model()
"""


@pytest.mark.parametrize("tamper", ["another loader", "code beside the loader",
                                    "models from code", "another flavor"])
def test_tampered_model_code_in_the_registry_never_runs(store, tmp_path, tamper):
    import mlflow

    from kzjobs.release import registry
    from kzjobs.release.model_ref import open_bundle

    v = register_test_bundle(store)
    model = _artifact(v)
    marker = tmp_path / f"ran-{tamper.replace(' ', '-')}"
    module = f"kz_evil_{tamper.replace(' ', '_')}"
    (model / "code").mkdir()
    (model / "code" / f"{module}.py").write_text(EVIL.format(marker=str(marker)))
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    if tamper == "another loader":
        pyfunc |= {"loader_module": module, "code": "code"}
        error = rf"loads with '{module}', not the installed kzjobs\.release\.registry_model"
    elif tamper == "code beside the loader":  # prepended to sys.path: shadows any module
        pyfunc["code"] = "code"
        error = r"pyfunc flavor has \['code'\], which would run code stored in the artifact"
    elif tamper == "models from code":
        pyfunc |= {"loader_module": "mlflow.pyfunc.loaders.code_model",
                   "model_code_path": f"code/{module}.py"}
        error = r"not the installed kzjobs\.release\.registry_model"
    else:
        mlmodel["flavors"]["evil"] = {"code": "code"}
        error = r"flavors \['evil', 'python_function'\]"
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))

    for load in (registry.load_model, open_bundle):
        with pytest.raises(registry.UntrustedModelError, match=error):
            load(f"models:/kz-recognizer/{v}")
    assert not marker.exists()  # refused before anything in the artifact ran
    if tamper == "another loader":
        # The threat is real: MLflow itself runs what the tampered MLmodel names.
        mlflow.pyfunc.load_model(f"models:/kz-recognizer/{v}")
        assert marker.read_text() == "ran"


def test_promotion_rejects_a_tampered_candidate(store):
    from kzjobs.release.promote import PromoteJob
    from kzjobs.release.registry import get_version

    v1 = register_test_bundle(store, "a", 0.40)
    job = PromoteJob(store_uri=store.uri, profile_name="tiny", lock_timeout=30)
    assert job.run()["decision"] == "promoted"
    v2 = register_test_bundle(store, "b", 0.99)  # better on paper...
    (_artifact(v2) / "data/bundle" / WEIGHT).write_text("weights of someone else")
    out = job.run()
    assert (out["decision"], int(get_version("champion").version)) == ("rejected", v1)
    assert "BundleIntegrityError" in out["reason"] and WEIGHT in out["reason"]
