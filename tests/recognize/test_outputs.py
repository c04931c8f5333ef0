"""Recognition outputs: reading order, transcripts, JSON, review pages, merge."""

from __future__ import annotations

import html

from PIL import Image

from kzjobs.core.store import open_store
from kzjobs.data.format import Box, read_submission
from kzjobs.recognize.outputs import Char, PageResult, done_pages, merge, write_page
from kzjobs.recognize.reading_order import reading_order
from kzjobs.recognize.review import (
    PageSummary,
    book_script,
    book_scripts,
    books,
    review_index,
    review_page,
)

A, II, U, E = "U+3042", "U+3044", "U+3046", "U+3048"  # あいうえ


def test_columns_right_to_left_top_to_bottom():
    # Two columns; the right one (x~200) is read first, each from the top.
    boxes = [
        Box(A, 100, 50, 40, 40),  # left column, top
        Box(II, 205, 120, 40, 40),  # right column, second (drifted a little)
        Box(U, 200, 40, 40, 40),  # right column, top
        Box(E, 98, 130, 40, 40),  # left column, second
    ]
    assert reading_order(boxes) == [2, 1, 0, 3]
    assert reading_order([]) == []


def test_transcript_and_json_follow_reading_order():
    page = PageResult(
        "aa_1",
        400,
        300,
        [
            Char(A, 100, 50, 40, 40, 0.9),
            Char(II, 205, 120, 40, 40, 0.8),
            Char(U, 200, 40, 40, 40, 0.3),
        ],
    )
    assert page.transcript() == "うい\nあ\n"
    data = page.to_json()
    assert [c["char"] for c in data["characters"]] == ["う", "い", "あ"]
    assert [(c["column"], c["index"]) for c in data["characters"]] == [(0, 0), (0, 1), (1, 0)]
    assert PageResult.from_json(data).transcript() == page.transcript()


def test_page_outputs_resume_marker_and_merge(tmp_path):
    store = open_store(tmp_path)
    image = Image.new("RGB", (400, 300), "white")
    pages = {
        "bb_2": PageResult("bb_2", 400, 300, [Char(A, 10, 10, 20, 20, 0.9)]),
        "aa_1": PageResult("aa_1", 400, 300, [Char(II, 50, 60, 20, 30, 0.2)]),
    }
    write_page(store, pages["bb_2"], image)
    assert done_pages(store) == {"bb_2"}
    write_page(store, pages["aa_1"], image)
    assert done_pages(store) == {"aa_1", "bb_2"}

    summary = merge(store, ["bb_2", "aa_1"])
    assert summary == {"pages": 2, "characters": 2}
    sub = read_submission(store.read_bytes("submission.csv"))
    assert list(sub) == ["aa_1", "bb_2"]  # sorted: the same bytes whatever the shard order
    assert (sub["aa_1"][0].x, sub["aa_1"][0].y) == (60, 75)

    review = store.read_text("review/aa_1.html")
    assert "data:image/jpeg;base64," in review
    assert 'class="c low"' in review and "い" in review
    assert 'href="bb_2.html"' in store.read_text("review/index.html")
    assert store.read_text("transcripts/bb_2.txt") == "あ\n"
    # Each book's page order, for the pages' previous/next links (tests/recognize/
    # test_review_browser.py follows them in Chromium).
    assert f'src="{book_script("aa")}"' in review
    assert '"href":"aa_1.html"' in store.read_text(f"review/{book_script('aa')}")

    # A re-run writes the same bytes: the page, the index and the books' scripts.
    reviews = {k: store.read_bytes(k) for k in store.list("review")}
    assert len(reviews) == 5
    write_page(store, pages["aa_1"], image)
    merge(store, ["aa_1", "bb_2"])
    assert {k: store.read_bytes(k) for k in store.list("review")} == reviews


def test_review_pages_escape_what_they_show(tmp_path):
    """Ids, book and file names go into HTML text, attributes, a script's JSON and URLs."""
    nasty = '源氏 "x" </script><b>&'
    page = PageResult("Scan 1 #2", 400, 300, [Char(A, 10, 10, 20, 20, 0.9)],
                      {"book": nasty, "name": nasty + ".pdf", "page": 1})
    text = review_page(page, Image.new("RGB", (400, 300)), 0.75)
    assert nasty not in text and "</script><b>" not in text
    assert html.escape(nasty) in text  # shown as written
    assert text.count("</script>") == 3  # the page's own three scripts, none injected
    index = review_index([PageSummary.of(page, 0.75)], 0.75)
    assert 'href="Scan%201%20%232.html"' in index and "<b>&" not in index
    assert book_scripts([PageSummary.of(page, 0.75)]) == {
        book_script(nasty): 'window.KZ_REVIEW_BOOK = {"book":"源氏 \\"x\\" \\u003c/script\\u003e'
        '\\u003cb\\u003e\\u0026","pages":[{"characters":1,"href":"Scan%201%20%232.html",'
        '"id":"Scan 1 #2","low":0}]};\n'}


def test_a_books_pages_go_in_file_and_page_order_with_numbers_as_numbers():
    pages = [PageSummary("b_p10", "b", 1, 0), PageSummary("b_p9", "b", 1, 0),
             PageSummary("x", "c", 1, 0, "Scan 10.pdf", 1),
             PageSummary("y", "c", 1, 0, "Scan 2.pdf", 7),
             PageSummary("z", "c", 1, 0, "Scan 2.pdf", 3)]
    assert {b: [p.image_id for p in ps] for b, ps in books(pages).items()} == {
        "b": ["b_p9", "b_p10"], "c": ["z", "y", "x"]}


def test_the_review_threshold_is_a_setting(tmp_path, monkeypatch):
    from kzjobs.core.settings import get_settings

    page = PageResult("aa_1", 400, 300, [Char(A, 10, 10, 20, 20, 0.8),
                                         Char(II, 50, 10, 20, 20, 0.6)])
    image = Image.new("RGB", (400, 300), "white")
    for setting, low in (("0.9", 2), ("0.7", 1)):
        monkeypatch.setenv("KZ_REVIEW_LOW_CONFIDENCE", setting)
        get_settings.cache_clear()
        store = open_store(tmp_path / setting)
        write_page(store, page, image)
        merge(store, ["aa_1"])
        assert store.read_text("review/aa_1.html").count('<g class="c low"') == low
        assert f'value="{float(setting):.2f}"' in store.read_text("review/aa_1.html")
        assert f'data-low="{low}"' in store.read_text("review/index.html")
    get_settings.cache_clear()
