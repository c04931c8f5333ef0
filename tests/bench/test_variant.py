"""bench.variant: a variant run starts from a copy of exactly what the base run's earlier
stages wrote, and its profile changes only the fields it names."""

from __future__ import annotations

import pytest

from bench.pipeline import bench_plan
from bench.variant import copy_base, parse_overrides
from kzjobs.core.store import open_store

# What a finished two-fold, one-kind bench run holds, relative to its run prefix.
RUN_FILES = [
    "validation/report.json", "folds.json",
    "detect/fold0/model.pt", "detect/fold0/oof.csv", "detect/fold1/model.pt",
    "detect/fold1/oof.csv", "oof_boxes.csv",
    "classify/resnet18/fold0/model.pt", "classify/resnet18/fold1/model.pt",
    "incoming/datasets-incoming-dev/boxes.csv",
    "incoming/datasets-incoming-dev/preds/resnet18-fold0.parquet",
    "pseudo/labels.csv", "pseudo/labels.json",
    "classify/resnet18-ft/fold0/model.pt", "classify/resnet18-ft/fold1/model.pt",
    "level2/report.json", "bundle.json", "bench-stage-seconds.json",
]


@pytest.fixture
def base_run(tmp_path):
    store = open_store(tmp_path)
    base = bench_plan("tiny")
    for name in RUN_FILES:
        store.write_text(base.keys.key(name), name)
    return store, base


@pytest.mark.parametrize(("start", "copied"), [
    ("finetune", RUN_FILES[:RUN_FILES.index("classify/resnet18-ft/fold0/model.pt")]),
    ("classify_train", RUN_FILES[:RUN_FILES.index("classify/resnet18/fold0/model.pt")]),
    # The detectors stay; the OOF boxes they wrote beside them are made again.
    ("detect_oof", ["validation/report.json", "folds.json", "detect/fold0/model.pt",
                    "detect/fold1/model.pt"]),
    ("bundle", RUN_FILES[:RUN_FILES.index("bundle.json")]),
])
def test_the_variant_starts_from_what_the_stages_before_its_first_wrote(base_run, start, copied):
    store, base = base_run
    variant = bench_plan("tiny", "variant-x")
    keys = copy_base(store, base, variant, start)
    assert sorted(keys) == sorted(variant.keys.key(name) for name in copied)
    assert sorted(store.list(variant.run)) == sorted(keys)
    assert all(store.read_text(variant.keys.key(name)) == name for name in copied)
    assert len(store.list(base.run)) == len(RUN_FILES)  # the base run is left as it was


def test_a_copy_keeps_what_the_variant_run_already_made(base_run):
    store, base = base_run
    variant = bench_plan("tiny", "variant-x")
    store.write_text(variant.keys.key("folds.json"), "the variant's own")
    copy_base(store, base, variant, "finetune")
    assert store.read_text(variant.keys.key("folds.json")) == "the variant's own"


def test_overrides_are_section_fields_with_yaml_values():
    assert parse_overrides(["classify.pseudo_share=0.75", "classify.tta_scales=[1.0, 0.85]",
                            "pseudo.keep_seg_fp=true"]) == {
        "classify": {"pseudo_share": 0.75, "tta_scales": [1.0, 0.85]},
        "pseudo": {"keep_seg_fp": True}}
    for bad in ("classify.epochs", "epochs=3", ".epochs=3", "classify.=3"):
        with pytest.raises(ValueError, match=r"expected section\.field=value"):
            parse_overrides([bad])


def test_a_larger_incoming_collection_holds_the_base_runs_pages_first(tmp_path):
    """--incoming-pages: the dev books again at more pages each, made with the base
    run's defaults; its first pages are the base run's, and a base run made otherwise is
    refused rather than compared with other pages."""
    from bench.pipeline import HELDOUT_BOOKS, SEED, VOCABULARY_SIZE, make_heldout
    from bench.variant import larger_heldout
    from kzjobs.synth.fonts import split

    store = open_store(tmp_path / "store")
    make_heldout(store, "datasets/dev", "datasets/incoming-dev", books=HELDOUT_BOOKS, pages=1,
                 seed=SEED + 1, fonts=list(split("dev")), vocabulary_size=VOCABULARY_SIZE)
    heldout, incoming = larger_heldout(store, 2)
    assert (heldout, incoming) == ("datasets/dev-p2", "datasets/incoming-dev-p2")
    images = sorted(k.rsplit("/", 1)[1] for k in store.list(f"{heldout}/images"))
    assert len(images) == 2 * HELDOUT_BOOKS
    assert sorted(k.rsplit("/", 1)[1] for k in store.list(f"{incoming}/images")) == images
    assert not store.exists(f"{incoming}/train.csv")  # the incoming pages carry no labels
    base = sorted(k.rsplit("/", 1)[1] for k in store.list("datasets/dev/images"))
    assert set(base) < set(images)

    other = open_store(tmp_path / "other")
    make_heldout(other, "datasets/dev", "datasets/incoming-dev", books=HELDOUT_BOOKS, pages=1,
                 seed=SEED + 1, fonts=list(reversed(split("dev"))),
                 vocabulary_size=VOCABULARY_SIZE)
    with pytest.raises(ValueError, match="not the base run's"):
        larger_heldout(other, 2)


def test_a_second_round_reads_the_incoming_pages_with_the_base_runs_finetuned_models(base_run):
    """--second-round: the base run's incoming predictions are not copied, and they are
    made again by its fine-tuned classifiers, under the same keys; the variant then
    fine-tunes the base classifiers again (they are copied; the fine-tuned ones are not)."""
    from bench.variant import second_round_reads

    store, base = base_run
    variant = bench_plan("tiny", "variant-x")
    keys = copy_base(store, base, variant, "pseudolabel", ("classify_incoming",))
    copied = RUN_FILES[:RUN_FILES.index("pseudo/labels.csv")]
    copied.remove("incoming/datasets-incoming-dev/preds/resnet18-fold0.parquet")
    assert sorted(keys) == sorted(variant.keys.key(name) for name in copied)

    reads = second_round_reads(variant, base)
    assert len(reads) == len(variant.args()["classify_incoming"]) == 4  # 2 folds, dev, test
    for n, call in enumerate(reads):
        fold, collection = n % 2, ("datasets-incoming-dev", "datasets-incoming-test")[n // 2]
        assert call[call.index("--model") + 1] == base.keys.key(
            "classify", "resnet18-ft", f"fold{fold}", "model.pt")
        assert call[call.index("--out") + 1] == variant.keys.key(
            "incoming", collection, "preds", f"resnet18-fold{fold}.parquet")
    finetune = variant.args()["finetune"]
    assert [c[c.index("--init") + 1] for c in finetune] == [
        variant.keys.key("classify", "resnet18", f"fold{k}", "model.pt") for k in (0, 1)]
