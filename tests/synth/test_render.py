"""Ground-truth boxes hug the ink drawn for their character; distractors are drawn but
never annotated; pages have the competition's shape."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from kzjobs.synth import FONTS
from kzjobs.synth.generator import book_style, page_layout, render_page
from kzjobs.synth.paper import paint
from kzjobs.synth.render import ink_layer
from kzjobs.synth.vocab import load_vocabulary


def _boxes_mask(shape, boxes) -> np.ndarray:
    inside = np.zeros(shape, bool)
    for b in boxes:
        inside[b.y : b.y + b.h, b.x : b.x + b.w] = True
    return inside


@pytest.mark.parametrize("book", range(len(FONTS)))
def test_boxes_hug_the_ink_of_their_character(book):
    """On a clean page (flat paper, no distractors), each character's own ink lies inside
    its box and reaches all four borders of it (within 2 px); no ink is unattributed."""
    vocab = load_vocabulary()
    style = book_style(11, book, FONTS[book]).model_copy(update={"rotation": 4.0})
    page = page_layout(style, vocab, 11, book, 0, distractors=False)
    assert len(page.chars) > 40
    # The same characters as on the real page, which only adds distractors.
    assert page.boxes == page_layout(style, vocab, 11, book, 0).boxes
    pixels = paint(page, style, np.random.default_rng(0), clean=True)
    ink = np.any(pixels != np.array(style.paper, np.uint8), axis=2)
    attributed = np.zeros(ink.shape, bool)
    for stamp, box in zip(page.chars, page.boxes, strict=True):
        own = ink_layer(page, [stamp])  # this character alone, drawn as paint draws it
        y0, x0 = max(0, box.y - 8), max(0, box.x - 8)
        near = own[y0 : box.y + box.h + 8, x0 : box.x + box.w + 8] > 0
        attributed[y0 : box.y + box.h + 8, x0 : box.x + box.w + 8] |= near
        ys, xs = np.nonzero(near)
        ys, xs = ys + y0, xs + x0
        assert ys.size and ys.size == np.count_nonzero(own), box
        # Nothing outside the box...
        assert xs.min() >= box.x and ys.min() >= box.y, box
        assert xs.max() < box.x + box.w and ys.max() < box.y + box.h, box
        # ...and ink on every border.
        assert xs.min() - box.x <= 2 and ys.min() - box.y <= 2, box
        assert box.x + box.w - 1 - xs.max() <= 2 and box.y + box.h - 1 - ys.max() <= 2, box
        # The painted page really has that ink there.
        assert ink[ys, xs].all()
    assert not (ink & ~attributed).any(), "ink on the clean page that belongs to no box"


def test_painted_pages_have_ink_in_every_box(sample):
    """After texture, blur and JPEG, every box still holds dark ink and the paper between
    characters is light."""
    from kzjobs.data.format import read_annotations

    store, _ = sample
    truth = read_annotations(store.read_bytes("train.csv"))
    for image_id, boxes in truth.items():
        grey = np.asarray(Image.open(io.BytesIO(store.read_bytes(f"images/{image_id}.jpg")))
                          .convert("L"), np.float32)
        paper = np.median(grey[~_boxes_mask(grey.shape, boxes)])
        for b in boxes:
            assert grey[b.y : b.y + b.h, b.x : b.x + b.w].min() < paper - 60, (image_id, b)


def test_distractors_are_drawn_outside_every_box():
    vocab = load_vocabulary()
    busy = {"gloss_rate": 0.3, "mark_rate": 0.2, "seal_rate": 1.0, "frame": True,
            "double_frame": True, "ruled": True}
    seen = {"gloss": 0, "mark": 0, "seal": 0, "line": 0}
    for book, font in enumerate(("kouzan-gyousyo", "hanazono")):
        style = book_style(3, book, font).model_copy(update=busy)
        page = page_layout(style, vocab, 3, book, 0)
        for kind in seen:
            seen[kind] += page.distractors[kind]
        inside = _boxes_mask((page.height, page.width), page.boxes)
        others = ink_layer(page, page.extras + page.seals, lines=True) > 0
        assert others.any()
        assert not (others & inside).any(), "a distractor draws inside a character box"
        # Not annotated: the boxes are exactly the characters.
        assert len(page.boxes) == len(page.chars)
        assert all(b.code.startswith("U+") for b in page.boxes)
    assert all(seen.values()), seen


def test_red_seals_are_on_the_page_but_not_in_boxes():
    vocab = load_vocabulary()
    style = book_style(4, 0, "kouzan-brush").model_copy(update={"seal_rate": 1.0})
    page, data = render_page(style, vocab, 4, 0, 0)
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r > 140) & (r - g > 70) & (r - b > 70)
    inside = _boxes_mask(red.shape, page.boxes)
    assert page.seals
    assert (red & ~inside).sum() > 500  # a seal's worth of red pixels
    assert (red & inside).sum() < 0.01 * red.sum()


def test_page_shape_and_columns(sample):
    from kzjobs.data.format import read_annotations

    store, _ = sample
    truth = read_annotations(store.read_bytes("train.csv"))
    styles = store.read_json("books.json")
    full = 0
    for image_id, boxes in truth.items():
        with Image.open(io.BytesIO(store.read_bytes(f"images/{image_id}.jpg"))) as img:
            width, height = img.size
        assert 1600 <= height <= 2400
        for b in boxes:
            assert b.x >= 0 and b.y >= 0 and b.x + b.w <= width and b.y + b.h <= height
        # Boxes are in reading order: a column runs down, the next starts to its left.
        columns: list[list] = [[]]
        for prev, cur in itertools.pairwise(boxes):
            columns[-1].append(prev)
            if cur.y < prev.y:
                columns.append([])
        columns[-1].append(boxes[-1])
        centres = [np.mean([b.x + b.w / 2 for b in col]) for col in columns]
        assert all(a > b for a, b in itertools.pairwise(centres)), centres
        n_columns = styles[image_id.split("_")[0]]["style"]["columns"]
        assert 6 <= n_columns <= 12
        assert 1 <= len(columns) <= n_columns
        full += len(columns) == n_columns
    # Most pages fill every column (a chapter's last page may not).
    assert full >= len(truth) / 2
