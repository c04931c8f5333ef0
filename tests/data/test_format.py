"""The competition formats: strict parsing with errors that say where."""

from __future__ import annotations

import pytest

from kzjobs.data.format import (
    MAX_PREDICTIONS_PER_PAGE,
    SEG_FP,
    Box,
    FormatError,
    Point,
    boxes_to_points,
    char_to_code,
    code_to_char,
    parse_labels,
    parse_points,
    read_annotations,
    read_submission,
    read_translation,
    write_annotations,
    write_submission,
    write_translation,
)

TRAIN = (
    "image_id,labels\n"
    "100241706_00004_1,U+306F 1231 3465 133 53 U+304C 275 1652 84 69\n"
    "hnsd004-017,\n"
)


def test_read_train_csv_keeps_order_and_empty_pages():
    pages = read_annotations(TRAIN.encode())
    assert list(pages) == ["100241706_00004_1", "hnsd004-017"]
    assert pages["100241706_00004_1"] == [
        Box("U+306F", 1231, 3465, 133, 53),
        Box("U+304C", 275, 1652, 84, 69),
    ]
    assert pages["hnsd004-017"] == []


def test_train_csv_round_trips_byte_for_byte():
    pages = read_annotations(TRAIN)
    assert write_annotations(pages).decode() == TRAIN
    assert read_annotations(write_annotations(pages)) == pages


def test_utf8_bom_is_accepted():
    assert read_annotations(b"\xef\xbb\xbf" + TRAIN.encode())


@pytest.mark.parametrize(
    ("labels", "position", "fragment"),
    [
        ("U+306F 1 2 3", None, "multiple of 5"),
        ("U+306F 1 2 3 4 X+1234 1 2 3 4", 5, "code point"),
        ("U+306F 1 2 three 4", 3, "not a number"),
        ("U+306F 1 2 3.5 4", 3, "not an integer"),
        ("U+306F 1 2 -3 4", 0, "positive"),
        ("U+306F 1 2 3 0", 0, "positive"),
        ("u+306f 1 2 3 4", 0, "code point"),
    ],
)
def test_malformed_labels_name_image_and_position(labels, position, fragment):
    with pytest.raises(FormatError) as err:
        parse_labels("img_1", labels)
    assert err.value.image_id == "img_1"
    assert err.value.position == position
    assert fragment in str(err.value)
    assert "img_1" in str(err.value)


def test_box_codes_only_where_allowed():
    with pytest.raises(FormatError):
        parse_labels("p", f"{SEG_FP} 1 2 3 4")
    assert parse_labels("p", f"{SEG_FP} 1 2 3 4", allow=[SEG_FP])[0].code == SEG_FP


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"id,labels\nx,\n", "expected columns"),
        (b"", "empty CSV"),
        ("image_id,labels\nx,U+3042 1 1 1 1\n".encode("utf-16"), "not UTF-8"),
        (b"image_id,labels\nx,U+3042 1 1 1 1,extra\n", "expected 2 fields"),
        (b"image_id,labels\nx,\nx,\n", "duplicate"),
    ],
)
def test_unusable_csv_fails_as_a_whole(data, fragment):
    with pytest.raises(FormatError, match=fragment):
        read_annotations(data)


def test_submission_round_trip_and_cap():
    pages = {"a_1": [Point("U+3042", 10.4, 20.6)], "a_2": []}
    data = write_submission(pages)
    assert data.decode() == "image_id,labels\na_1,U+3042 10 21\na_2,\n"
    assert read_submission(data) == {"a_1": [Point("U+3042", 10, 21)], "a_2": []}
    too_many = {"a_1": [Point("U+3042", 1, 1)] * (MAX_PREDICTIONS_PER_PAGE + 1)}
    with pytest.raises(FormatError, match="1200"):
        write_submission(too_many)
    text = "image_id,labels\na_1," + " ".join(["U+3042 1 1"] * 1201) + "\n"
    with pytest.raises(FormatError, match="a_1"):
        read_submission(text)


def test_points_grammar():
    assert parse_points("p", "U+3042 1.5 2") == [Point("U+3042", 1.5, 2.0)]
    with pytest.raises(FormatError, match="multiple of 3"):
        parse_points("p", "U+3042 1")
    with pytest.raises(FormatError) as err:
        parse_points("p", "U+3042 1 y")
    assert err.value.position == 2


def test_translation_round_trip():
    vocab = {"U+304B": "か", "U+3042": "あ"}
    assert read_translation(write_translation(vocab)) == vocab
    with pytest.raises(FormatError, match="bad code point"):
        read_translation("Unicode,char\nXYZ,か\n")


def test_code_char_conversion():
    assert code_to_char("U+304B") == "か"
    assert char_to_code("か") == "U+304B"
    assert char_to_code("𠀋") == "U+2000B"
    assert code_to_char("U+2000B") == "𠀋"


def test_box_centres_submission():
    pages = {"p": [Box("U+3042", 10, 20, 4, 6)]}
    assert boxes_to_points(pages) == {"p": [Point("U+3042", 12.0, 23.0)]}
