"""generate(): files, determinism, names of books, re-runs, the CLI and font errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kzjobs.core.store import open_store
from kzjobs.data.books import assign_folds, book_id
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import read_annotations, read_translation
from kzjobs.synth import FONTS, fonts_across_folds, generate
from kzjobs.synth.generator import book_name, letters


def _files(store) -> dict[str, bytes]:
    return {k: store.read_bytes(k) for k in store.list()}


def _make(tmp_path, name: str, **kwargs):
    store = open_store(tmp_path / name)
    args = {"books": 2, "pages_per_book": 1, "seed": 1, "fonts": ["kouzan-gyousyo"]} | kwargs
    return store, generate(store, **args)


def test_layout_and_books(sample):
    store, summary = sample
    keys = store.list()
    images = [k for k in keys if k.startswith("images/")]
    assert {"train.csv", "unicode_translation.csv", "books.json"} <= set(keys)
    assert len(images) == summary["pages"] == 6
    truth = read_annotations(store.read_bytes("train.csv"))
    assert sorted(f"images/{i}.jpg" for i in truth) == sorted(images)
    assert summary["boxes"] == sum(len(b) for b in truth.values()) > 300
    # Each book is a font plus a style; books cycle through the fonts; distinct book ids.
    meta = store.read_json("books.json")
    assert [m["font"] for m in meta.values()] == ["kouzan-sousyo", "aoyagi-kouzan",
                                                   "ipaex-mincho"]
    assert {book_id(i) for i in truth} == set(meta) == set(summary["books"])
    assert len({json.dumps(m["style"], sort_keys=True) for m in meta.values()}) == 3
    # The dataset reader takes it as it is.
    ds = Dataset(store)
    assert ds.labelled and ds.image_ids() == list(truth)
    assert ds.read_image(ds.image_ids()[0]).height >= 1600


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, _ = _make(tmp_path, "a")
    b, _ = _make(tmp_path, "b")
    c, _ = _make(tmp_path, "c", seed=2)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    assert files_a["train.csv"] != files_c["train.csv"]
    images_a = [v for k, v in sorted(files_a.items()) if k.startswith("images/")]
    images_c = [v for k, v in sorted(files_c.items()) if k.startswith("images/")]
    assert len(images_a) == len(images_c) == 2
    assert not set(images_a) & set(images_c)


def test_rerun_paints_only_missing_or_stale_pages(tmp_path):
    store, first = _make(tmp_path, "a", pages_per_book=2)
    before = _files(store)
    assert first["painted"] == 4
    again = generate(store, books=2, pages_per_book=2, seed=1, fonts=["kouzan-gyousyo"])
    assert again["painted"] == 0 and _files(store) == before
    victim = sorted(k for k in before if k.startswith("images/"))[1]
    store.delete(victim)
    store.write_bytes("train.csv", b"half")  # a crash before the end
    third = generate(store, books=2, pages_per_book=2, seed=1, fonts=["kouzan-gyousyo"])
    assert third["painted"] == 1 and _files(store) == before
    # Same ids from other arguments (another font) are stale: painted again.
    fourth = generate(store, books=2, pages_per_book=2, seed=1, fonts=["ipaex-mincho"])
    assert fourth["painted"] == 4


def test_book_names_never_collide():
    assert [letters(i) for i in (0, 25, 26, 27, 701, 702)] == ["a", "z", "aa", "ab", "zz",
                                                              "aaa"]
    names = {book_name("syn" + letters(s), g) for s in range(60) for g in range(60)}
    assert len(names) == 3600
    assert len({book_id(f"{n}_000") for n in names}) == 3600


def test_incoming_collection_uses_other_books_and_only_images(tmp_path):
    _train, s1 = _make(tmp_path, "train")
    incoming, s2 = _make(tmp_path, "incoming", seed=2, labelled=False)
    assert all(k.startswith("images/") for k in incoming.list())
    assert len(incoming.list()) == 2
    assert not set(s1["books"]) & set(s2["books"])
    _offset, s3 = _make(tmp_path, "offset", start_book=2)
    assert not set(s1["books"]) & set(s3["books"])
    _prefixed, s4 = _make(tmp_path, "prefixed", book_prefix="new")
    assert all(b.startswith("new") for b in s4["books"])


def test_bad_arguments(tmp_path):
    store = open_store(tmp_path / "x")
    with pytest.raises(ValueError, match="unknown font 'comic-sans'"):
        generate(store, books=1, pages_per_book=1, seed=0, fonts=["comic-sans"])
    with pytest.raises(ValueError, match="book_prefix"):
        generate(store, books=1, pages_per_book=1, seed=0, book_prefix="Syn1")
    with pytest.raises(ValueError):
        generate(store, books=0, pages_per_book=1, seed=0)
    assert store.list() == []


def test_missing_font_names_the_debian_package(tmp_path, monkeypatch):
    from kzjobs.synth import fonts

    monkeypatch.setattr(fonts, "FONT_ROOTS", (tmp_path / "no-fonts",))
    fonts.font_path.cache_clear()
    try:
        with pytest.raises(fonts.FontNotFoundError, match="fonts-aoyagi-kouzan-t"):
            generate(open_store(tmp_path / "x"), books=1, pages_per_book=1, seed=0,
                     fonts=["aoyagi-kouzan"])
    finally:
        fonts.font_path.cache_clear()


def test_cli_writes_the_layout(tmp_path):
    from kzjobs.cli import app

    runner = CliRunner()
    out = tmp_path / "ds"
    result = runner.invoke(app, ["synth", str(out), "--books", "1", "--pages-per-book", "1",
                                 "--seed", "3", "--fonts", "ipaex-mincho,hanazono"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["pages"] == 1 and summary["books"] == {"syndA": "ipaex-mincho"}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["books.json", "images/syndA_000.jpg", "train.csv",
                     "unicode_translation.csv"]
    vocab = read_translation((out / "unicode_translation.csv").read_bytes())
    truth = read_annotations((out / "train.csv").read_bytes())
    assert {b.code for b in truth["syndA_000"]} <= set(vocab)

    # --unlabelled writes images only; a store key lands inside --store.
    store = tmp_path / "store"
    result = runner.invoke(app, ["synth", "incoming/batch1", "--store", str(store),
                                 "--books", "1", "--pages-per-book", "2", "--seed", "4",
                                 "--fonts", "kouzan-brush", "--unlabelled"])
    assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    assert files == ["incoming/batch1/images/syneA_000.jpg",
                     "incoming/batch1/images/syneA_001.jpg"]

    bad = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--fonts", "nope"])
    assert bad.exit_code != 0 and "unknown font" in str(bad.exception)
    assert FONTS[0] in str(bad.exception)


def test_generate_into_s3(s3_env):
    """The same job on S3 (moto's server over HTTP): keys, and a re-run paints nothing."""
    store = open_store(s3_env + "/datasets/syn")
    args = {"books": 1, "pages_per_book": 1, "seed": 9, "fonts": ["hanazono"]}
    first = generate(store, **args)
    assert store.list() == ["books.json", "images/synjA_000.jpg", "train.csv",
                            "unicode_translation.csv"]
    assert first["painted"] == 1
    assert generate(store, **args)["painted"] == 0
    assert Dataset(store).read_image("synjA_000").height >= 1600


@pytest.mark.parametrize(("n_fonts", "n_folds"), [(4, 2), (3, 2), (2, 2), (3, 3), (4, 5)])
def test_fonts_across_folds_give_every_fold_every_font(n_fonts, n_folds):
    fonts = [f"font{i}" for i in range(n_fonts)]
    cycle = fonts_across_folds(fonts, n_folds)
    books = [book_name("s", i) for i in range(len(cycle))]  # as generate names them
    folds = assign_folds([f"{b}_001" for b in books], n_folds)  # one page each
    for fold in range(n_folds):
        assert sorted(cycle[i] for i, b in enumerate(books) if folds[b] == fold) == fonts
