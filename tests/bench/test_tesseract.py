"""The Tesseract baseline: TSV parsing and spreading (always), the real binary (when installed).

``make test`` installs the binary and its Japanese data (the Makefile's test target
depends on ``bench-packages``), so the real-binary tests run there; a bare ``pytest``
on a machine without tesseract skips only those, saying how to install it.
"""

from __future__ import annotations

import shutil

import pytest

from bench.tesseract import (
    TSV_COLUMNS,
    TesseractError,
    Word,
    _cap,
    _wait,
    parse_lines,
    parse_tsv,
    recognize_tesseract,
    run_tesseract,
    run_tesseract_bench,
    spread_word,
    words_to_points,
)
from kzjobs.data.format import MAX_PREDICTIONS_PER_PAGE, Box, Point, char_to_code
from kzjobs.method.metric import score

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract binary not installed: run `make bench-packages` "
    "(apt-get install tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert)",
)

HEADER = "\t".join(TSV_COLUMNS)
# Rows in the shape tesseract 5.3 writes: page, block, paragraph, line, then words.
TSV = "\n".join([
    HEADER,
    "1\t1\t0\t0\t0\t0\t0\t0\t1823\t2333\t-1\t",
    "2\t1\t1\t0\t0\t0\t221\t187\t1423\t2010\t-1\t",
    "3\t1\t1\t1\t0\t0\t962\t187\t682\t2010\t-1\t",
    "4\t1\t1\t1\t1\t0\t1553\t212\t91\t1885\t-1\t",
    "5\t1\t1\t1\t1\t1\t1577\t212\t45\t59\t96.335564\tと",
    "5\t1\t1\t1\t1\t2\t1559\t412\t85\t150\t92.166901\tを道",
    "5\t1\t1\t1\t1\t3\t1570\t600\t40\t40\t11.5\t ",
    '5\t1\t1\t1\t1\t4\t1500\t700\t30\t60\t50.0\t"a',
    "",
])


def test_parse_tsv_keeps_word_rows_with_text():
    words = parse_tsv(TSV)
    line = (1, 1, 1, 1)
    assert words == [
        Word(1577, 212, 45, 59, 96.335564, "と", line),
        Word(1559, 412, 85, 150, 92.166901, "を道", line),
        Word(1500, 700, 30, 60, 50.0, '"a', line),  # tesseract does not quote: " is a char
    ]
    assert parse_tsv("") == []


def test_parse_lines_joins_each_lines_words_under_the_line_box():
    second_line = [
        "4\t1\t1\t1\t2\t0\t1400\t200\t90\t300\t-1\t",
        "5\t1\t1\t1\t2\t1\t1410\t260\t60\t240\t80.0\tやま",
        "4\t1\t1\t1\t3\t0\t1300\t200\t90\t300\t-1\t",  # no words: dropped
    ]
    lines = parse_lines(TSV + "\n".join(second_line) + "\n")
    assert lines == [
        Word(1553, 212, 91, 1885, pytest.approx((96.335564 + 92.166901 + 50.0) / 3),
             'とを道"a', (1, 1, 1, 1)),
        Word(1400, 200, 90, 300, 80.0, "やま", (1, 1, 1, 2)),
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("level\tleft\n5\t1\n", "unexpected TSV header"),
        (HEADER + "\n5\t1\t1\t1\t1\t1\t10\t10\t5\n", "TSV line 2: 9 fields"),
        (HEADER + "\n5\t1\t1\t1\t1\t1\tten\t10\t5\t5\t90\tあ\n", "TSV line 2"),
    ],
)
def test_parse_tsv_rejects_malformed_output(text, reason):
    with pytest.raises(TesseractError, match=reason):
        parse_tsv(text)


def test_spread_word_puts_characters_evenly_down_the_box():
    points = spread_word(Word(100, 200, 40, 90, 90.0, "あい う"))
    # The space is skipped and not counted: 3 characters share the height.
    assert points == [
        Point("U+3042", 120.0, 215.0),
        Point("U+3044", 120.0, 245.0),
        Point("U+3046", 120.0, 275.0),
    ]


def test_spread_points_score_against_stacked_boxes():
    """A word over a column of three boxes hits each box with its own character."""
    truth = {"sa_000": [Box("U+5C71", 100, 200, 40, 30), Box("U+5DDD", 100, 230, 40, 30),
                        Box("U+65E5", 100, 260, 40, 30)]}
    preds = {"sa_000": words_to_points([Word(100, 200, 40, 90, 90.0, "山川日"),
                                        Word(300, 10, 20, 20, 80.0, "x")])}
    result = score(truth, preds)
    assert (result.tp, result.fp, result.fn) == (3, 1, 0)
    # Out of order characters miss on code but still detect.
    preds = {"sa_000": words_to_points([Word(100, 200, 40, 90, 90.0, "日川山")])}
    assert score(truth, preds).tp == 1
    assert score(truth, preds, ignore_code=True).tp == 3


def test_cap_keeps_the_most_confident_words():
    words = [Word(0, 0, 10, 10 * 600, 10.0, "あ" * 600), Word(0, 0, 10, 10, 99.0, "い"),
             Word(0, 0, 10, 10 * 700, 50.0, "う" * 700)]
    points = _cap(words_to_points(words), words)
    assert len(points) == MAX_PREDICTIONS_PER_PAGE
    assert points[0].code == "U+3044"
    assert [p.code for p in points[1:701]] == ["U+3046"] * 700
    small = words_to_points(words[:2])
    assert _cap(small, words[:2]) == small


def test_a_missing_binary_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(TesseractError, match="make bench-packages"):
        run_tesseract(b"")


def test_a_hung_child_is_killed_and_reaped_at_the_timeout():
    import subprocess

    proc = subprocess.Popen(["sleep", "30"])
    with pytest.raises(TesseractError, match="timed out"):
        _wait(proc, timeout=0.2)
    assert proc.returncode is not None  # reaped: no zombie left behind


# ---- the real binary ------------------------------------------------------------------

COLUMN = "日本国山川"  # printed kanji a mincho face renders unambiguously
CELL = 120


def column_page():
    """A white page with one vertical column of COLUMN in IPAex Mincho, and its boxes."""
    from PIL import Image, ImageDraw

    from kzjobs.synth.fonts import pil_font

    font = pil_font("ipaex-mincho", 90)
    page = Image.new("RGB", (400, 160 + CELL * len(COLUMN)), "white")
    draw = ImageDraw.Draw(page)
    boxes = []
    for i, char in enumerate(COLUMN):
        x, y = 140, 80 + i * CELL
        draw.text((x + CELL / 2, y + CELL / 2), char, font=font, fill="black", anchor="mm")
        boxes.append(Box(char_to_code(char), x, y, CELL, CELL))
    return page, boxes


@needs_tesseract
def test_recognize_reads_a_printed_column():
    page, boxes = column_page()
    truth = {"sa_000": boxes}
    by_line = recognize_tesseract(page, spread="line")
    # Clean print: every character read, and spread down the line box each lands in its cell.
    assert "".join(chr(int(p.code[2:], 16)) for p in by_line) == COLUMN
    assert score(truth, {"sa_000": by_line}).tp == len(COLUMN), by_line
    by_word = recognize_tesseract(page)
    # Same characters; tesseract's vertical word boxes lag the glyphs (#2679), so their
    # spread points fall in the cells less often: the line spread must not do worse.
    assert [p.code for p in by_word] == [p.code for p in by_line]
    assert score(truth, {"sa_000": by_word}).tp <= score(truth, {"sa_000": by_line}).tp
    with pytest.raises(ValueError, match="spread"):
        recognize_tesseract(page, spread="glyph")


@needs_tesseract
def test_bench_scores_pages_and_quarantines_a_bad_one(tmp_path):
    import io

    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import read_submission, write_annotations, write_translation

    page, boxes = column_page()
    store = open_store(tmp_path / "ds")
    buf = io.BytesIO()
    page.save(buf, format="JPEG", quality=95)
    store.write_bytes("images/sa_000.jpg", buf.getvalue())
    store.write_bytes("images/sb_000.jpg", b"\xff\xd8 truncated")
    store.write_bytes("train.csv", write_annotations({"sa_000": boxes, "sb_000": boxes[:2]}))
    store.write_bytes("unicode_translation.csv",
                      write_translation({b.code: chr(int(b.code[2:], 16)) for b in boxes}))
    submission = tmp_path / "sub.csv"

    result = run_tesseract_bench(Dataset(store), ["sa_000", "sb_000"], submission=submission)

    assert list(result["failed"]) == ["sb_000"]
    assert "tesseract exited" in result["failed"]["sb_000"]
    assert result["spread"] == "word"
    assert result["spreads"]["line"]["f1"]["by_book"]["sa"]["tp"] == len(COLUMN)
    book_a = result["f1"]["by_book"]["sa"]
    assert book_a["fp"] + book_a["tp"] == len(COLUMN)  # every character read, once
    # The bad page predicts nothing: its two boxes are misses, not dropped from the score.
    assert result["f1"]["by_book"]["sb"] == {"f1": 0.0, "precision": 0.0, "recall": 0.0,
                                             "tp": 0, "fp": 0, "fn": 2}
    assert result["detection_f1"]["tp"] >= book_a["tp"]
    assert result["pages"] == 2 and result["peak_rss_mb"] > 0 and result["cpu_s"] > 0
    assert read_submission(submission.read_bytes())["sb_000"] == []
    assert len(read_submission(submission.read_bytes())["sa_000"]) == result["points"]
