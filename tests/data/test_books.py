from __future__ import annotations

import pytest

from kzjobs.data.books import assign_folds, book_id, split_fold


@pytest.mark.parametrize(
    ("image_id", "book"),
    [
        ("100241706_00004_1", "100241706"),
        ("hnsd004-017", "hnsd"),
        ("umgy011-020", "umgy"),
        ("brsk001_005", "brsk"),
        ("200003076_00034_2", "200003076"),
        ("kza_003", "kza"),
        ("plain", "plain"),
    ],
)
def test_book_id(image_id, book):
    assert book_id(image_id) == book


def test_folds_sort_books_by_page_count_then_round_robin():
    ids = (
        [f"aa_{i}" for i in range(5)]
        + [f"bb_{i}" for i in range(2)]
        + [f"cc_{i}" for i in range(9)]
        + [f"dd_{i}" for i in range(1)]
    )
    # page counts: dd 1, bb 2, aa 5, cc 9 -> folds 0, 1, 0, 1
    assert assign_folds(ids, 2) == {"dd": 0, "bb": 1, "aa": 0, "cc": 1}
    assert assign_folds(reversed(ids), 2) == assign_folds(ids, 2)  # order-free
    train, valid = split_fold(ids, assign_folds(ids, 2), 1)
    assert {book_id(i) for i in valid} == {"bb", "cc"}
    assert {book_id(i) for i in train} == {"aa", "dd"}
    assert len(train) + len(valid) == len(ids)


def test_every_page_of_a_book_in_one_fold():
    ids = [f"{b}{n}_{p}" for b in "xyz" for n in range(3) for p in range(4)]
    folds = assign_folds(ids, 3)
    for fold in range(3):
        train, valid = split_fold(ids, folds, fold)
        assert not {book_id(i) for i in train} & {book_id(i) for i in valid}


def test_bad_fold_count():
    with pytest.raises(ValueError):
        assign_folds(["a_1"], 0)


@pytest.mark.parametrize("books", [0, 1])
def test_the_folds_job_refuses_fewer_books_than_folds(tmp_path, books):
    from kzjobs.core.store import open_store
    from kzjobs.method.folds import FoldsJob
    from kzjobs.synth import generate

    if books:
        generate(open_store(tmp_path).child("ds"), books=books, pages_per_book=2, seed=1,
                 fonts=["ipaex-mincho"])
    job = FoldsJob(store_uri=str(tmp_path), profile_name="tiny", dataset="ds", out="f.json")
    with pytest.raises(ValueError, match=rf"/ds: {books} book\(s\) for 2 folds"):
        job.run()
    assert not (tmp_path / "f.json").exists()
