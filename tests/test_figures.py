"""The pictures a training run logs: what they show is what the predictions say."""

from __future__ import annotations

from PIL import Image

from kzjobs.data.format import SEG_FP, Box
from kzjobs.method.figures import (
    RIGHT,
    WRONG,
    classifier_pictures,
    confused_pairs_grid,
    f1_by_book_chart,
    page_with_predictions,
)


def _count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    return sum(n for n, c in image.convert("RGB").getcolors(1 << 20) if c == colour)


def test_a_page_draws_right_boxes_green_wrong_ones_red_and_drops_seg_fp():
    page = Image.new("RGB", (400, 600), "white")
    truth = [Box("U+3042", 50, 50, 40, 40), Box("U+3044", 50, 150, 40, 40)]
    right = [Box("U+3042", 52, 52, 38, 38)]
    wrong = [Box("U+3046", 52, 152, 38, 38)]  # its centre is in あ's neighbour い
    drawn = page_with_predictions(page, truth, right + wrong)
    assert _count(drawn, RIGHT) > 0 and _count(drawn, WRONG) > 0
    only_right = page_with_predictions(page, truth, [*right, Box(SEG_FP, 52, 152, 38, 38)])
    assert _count(only_right, WRONG) == 0  # a seg_fp call is a dropped box, not a wrong one
    # Detection counts any code: the same wrong code is right for a detector's page.
    assert _count(page_with_predictions(page, truth, wrong, ignore_code=True), WRONG) == 0


def test_the_confused_pairs_grid_has_a_row_a_pair_and_its_crops():
    crop = Image.new("RGB", (30, 30), (10, 10, 200))
    grid = confused_pairs_grid([("U+3042", "U+304A", 5), ("U+3044", "U+308A", 2)],
                               {("U+3042", "U+304A"): [crop] * 3}, cell=64)
    assert grid.height == 2 * (64 + 8)
    assert _count(grid, (10, 10, 200)) == 3 * 30 * 30


def test_classifier_pictures_from_judged_boxes():
    pages = {"bk_1": Image.new("RGB", (200, 300), "white")}
    boxes = {"bk_1": [Box("U+3042", 10, 10, 30, 30), Box("U+3044", 10, 60, 30, 30),
                      Box(SEG_FP, 100, 100, 20, 20)]}
    truth = {"bk_1": boxes["bk_1"][:2]}
    judged = [("bk_1", 0, "U+3042", "U+3042"), ("bk_1", 1, "U+3044", "U+308A"),
              ("bk_1", 2, SEG_FP, "U+3042")]
    read = []
    pictures = classifier_pictures(judged, boxes, truth, {"bk": 0.5}, lambda i: read.append(i)
                                   or pages[i], title="t", overall=0.5)
    assert set(pictures) == {"valid_f1_by_book.png", "valid_page.png", "confused_pairs.png"}
    # One confused pair (い read as り; a seg_fp box called あ is no class confusion).
    assert pictures["confused_pairs.png"].height == 64 + 8
    assert read == ["bk_1", "bk_1"]  # the page shown, then the crops' page


def test_the_f1_chart_has_a_bar_a_book():
    fig = f1_by_book_chart({"b1": 0.9, "b2": 0.4, "b3": 0.7}, "dev", overall=0.66)
    (ax,) = fig.axes
    assert [round(p.get_height(), 2) for p in ax.patches] == [0.9, 0.4, 0.7]
