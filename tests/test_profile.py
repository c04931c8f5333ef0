from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kzjobs.core.profile import PROFILE_NAMES, Profile, load_profile


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_shipped_profiles_load(name):
    profile = load_profile(name)
    assert profile.name == name


def test_full_profile_is_the_seed_recipe():
    assert load_profile("full").data.n_folds == 5


def test_profile_from_path_and_unknown_keys_rejected(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  n_folds: 3\n")
    assert load_profile(str(path)).data.n_folds == 3
    assert load_profile(str(path)).name == "mine"
    path.write_text("data:\n  n_fold: 3\n")
    with pytest.raises(ValueError, match="n_fold"):
        load_profile(str(path))
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("nope")


def test_folds_job_writes_folds_to_the_store(tmp_path):
    from kzjobs.cli import app
    from kzjobs.core.store import open_store
    from kzjobs.data.format import Box, write_annotations
    from kzjobs.method.folds import load_folds

    store = open_store(tmp_path)
    pages = {f"{b}_{i}": [Box("U+3042", 1, 1, 2, 2)] for b in ("aa", "bb", "cc") for i in range(2)}
    store.write_bytes("ds/train.csv", write_annotations(pages))
    result = CliRunner().invoke(
        app, ["folds", "ds", "--out", "runs/r/folds.json", "--store", str(tmp_path),
              "--profile", "tiny"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_folds"] == 2
    folds = load_folds(store, "runs/r/folds.json")
    assert set(folds) == {"aa", "bb", "cc"} and set(folds.values()) == {0, 1}


@pytest.mark.parametrize("name", PROFILE_NAMES)
@pytest.mark.parametrize("by_alias", [True, False])
def test_a_saved_profile_loads_back(name, by_alias):
    # Bundles keep their profile as JSON; one written by an older kzjobs used field names
    # (`validation`), a newer one the YAML's (`validate`). Both must load as they were.
    profile = load_profile(name)
    assert Profile.model_validate(profile.model_dump(mode="json", by_alias=by_alias)) == profile
