"""bench.pretrain's books: the classifier trains on books in training fonts and is judged
on books in dev fonts; no test font is in either."""

from __future__ import annotations

import bench.pretrain as pretrain
from kzjobs.core.store import open_store
from kzjobs.synth.fonts import split


def test_the_book_fonts_are_training_then_dev_fonts_and_never_test_fonts():
    fonts = pretrain.book_fonts()
    trained, judged = fonts[:pretrain.TRAIN_BOOKS], fonts[pretrain.TRAIN_BOOKS:]
    assert len(judged) == pretrain.DEV_BOOKS
    assert set(trained) <= set(split("train")) and set(judged) == set(split("dev"))
    assert not set(fonts) & set(split("test"))


def test_the_judged_fold_holds_the_dev_font_books_and_only_them(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "TRAIN_BOOKS", 1)  # 3 pages: a small copy of the bench's
    monkeypatch.setattr(pretrain, "DEV_BOOKS", 2)
    monkeypatch.setattr(pretrain, "PAGES_PER_BOOK", 1)
    folds = pretrain.prepare(tmp_path)
    store = open_store(tmp_path)
    books = store.read_json(f"{pretrain.DATASET}/books.json")
    assert store.read_json(f"{pretrain.DATASET}/folds.json")["books"] == folds
    font = {book: meta["font"] for book, meta in books.items()}
    judged = {b for b, f in folds.items() if f == pretrain.JUDGED_FOLD}
    trained = set(folds) - judged
    assert len(judged) == 2 and len(trained) == 1 and set(folds) == set(books)
    assert {font[b] for b in judged} == set(split("dev"))
    assert {font[b] for b in trained} <= set(split("train"))  # no dev font in training
    assert not set(font.values()) & set(split("test"))
    assert store.exists(f"{pretrain.DATASET}/oof.csv")
