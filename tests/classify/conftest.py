"""Session data for the classifier tests: a small synthetic set, OOF-like boxes, folds,
and one model trained with the tiny profile (trained once, read by several tests)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kzjobs.core.store import Store, open_store
from kzjobs.data.format import read_annotations, write_annotations

SYNTH_SEED = 3
# The tiny profile with still less work, for tests of the job's mechanics (not learning).
MECHANICS_PROFILE = {
    "name": "mechanics",
    "data": {"n_folds": 2},
    "classify": {
        "kinds": ["resnet18"], "page_size": 320, "crop": [128, 96], "crops_per_page": 1,
        "max_boxes": 64, "box_bucket": 16, "hidden": 64, "epochs": 2, "batch_size": 2,
        "lr": 0.01, "tta_scales": [1.0], "top_k": 10, "threads": 1,
        "finetune_epochs": 1, "pseudo_share": 0.5,
    },
}


@dataclass
class Data:
    root: str  # store URI
    dataset: str
    boxes: str
    folds: str
    sources: dict[str, list[str]]  # per page, where each box came from (char, gloss, seal...)

    @property
    def store(self) -> Store:
        return open_store(self.root)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    """Two books of four pages in one font (held out: the other book), with OOF-like boxes."""
    from kzjobs.data.dataset import Dataset
    from kzjobs.method.folds import FoldsJob
    from kzjobs.synth import generate
    from tests.classify.oof_boxes import oof_like_boxes

    root = str(tmp_path_factory.mktemp("classify_store"))
    store = open_store(root)
    # The shared text: the floors below are of a model trained on one book and judged on
    # another, in a few seconds; books with texts of their own share too few characters.
    generate(store.child("ds"), books=2, pages_per_book=4, seed=SYNTH_SEED,
             fonts=["ipaex-mincho"], text="shared")
    boxes, sources = oof_like_boxes(Dataset.open("ds", store), synth_seed=SYNTH_SEED)
    store.write_bytes("ds/oof.csv", write_annotations(boxes))
    FoldsJob(store_uri=root, profile_name="tiny", dataset="ds", out="ds/folds.json").run()
    return Data(root, "ds", "ds/oof.csv", "ds/folds.json", sources)


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Data, tmp_path_factory: pytest.TempPathFactory,
             _mlflow_db_template: Path) -> dict:
    """The tiny profile trained on fold 0 (book syndB), its OOF predicted on book syndA."""
    from kzjobs.classify.jobs import ClassifyTrainJob
    from kzjobs.core.settings import get_settings

    db = tmp_path_factory.mktemp("classify_mlflow") / "mlflow.db"
    shutil.copyfile(_mlflow_db_template, db)
    uri = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KZ_MLFLOW_URI", uri)
        get_settings.cache_clear()
        summary = ClassifyTrainJob(
            store_uri=tiny_data.root, profile_name="tiny", dataset=tiny_data.dataset,
            folds=tiny_data.folds, boxes=tiny_data.boxes, kind="resnet18", fold=0,
            out="runs/r1/classify/resnet18/fold0", progress=False,
        ).run()
    get_settings.cache_clear()
    return summary | {"tracking_uri": uri}


@pytest.fixture(scope="session")
def mechanics_profile(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = Path(tmp_path_factory.mktemp("profiles")) / "mechanics.yaml"
    path.write_text(yaml.safe_dump(MECHANICS_PROFILE))
    return str(path)


@pytest.fixture
def small_data(tiny_data: Data, tmp_path: Path) -> Data:
    """Three readable pages and one corrupt training page, in a fresh store."""
    source = tiny_data.store
    root = str(tmp_path / "store")
    store = open_store(root)
    pages = ["syndA_000", "syndB_000", "syndB_001", "syndB_002"]
    for key in ("ds/unicode_translation.csv", "ds/folds.json"):
        store.write_bytes(key.replace("ds/", "small/"), source.read_bytes(key))
    for page in pages[:3]:
        store.write_bytes(f"small/images/{page}.jpg", source.read_bytes(f"ds/images/{page}.jpg"))
    store.write_bytes("small/images/syndB_002.jpg", b"\xff\xd8 not really a jpeg")
    for name in ("train.csv", "oof.csv"):
        rows = read_annotations(source.read_bytes(f"ds/{name}"), allow=("seg_fp",))
        store.write_bytes(f"small/{name}", write_annotations({p: rows[p] for p in pages}))
    sources = {p: tiny_data.sources[p] for p in pages}
    return Data(root, "small", "small/oof.csv", "small/folds.json", sources)
