"""A corpus of bad input, written into a store, with the quarantine it must produce.

:func:`write_bad_images` adds bad image files to any collection (the reliability tests
mix them into real pages); :func:`write_corpus` writes a whole small labelled dataset
with good pages, bad images, bad label rows and a submission CSV with bad rows;
:data:`UNUSABLE_CSVS` are inputs that must fail the job as a whole.

Every builder returns ``(item, reason substring)`` pairs: one pair per quarantine entry
expected, so an id that appears twice (a duplicate) is listed twice.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from kzjobs.core.images import DEFAULT_MAX_PIXELS
from kzjobs.core.store import Store, join
from kzjobs.data.format import (
    LABEL_COLUMNS,
    Box,
    Point,
    char_to_code,
    format_labels,
    format_points,
    write_rows,
    write_translation,
)

Expected = list[tuple[str, str]]

VOCABULARY = {char_to_code(c): c for c in "あいうえおかきくけこさしすせそ"}
CODES = sorted(VOCABULARY)
PAGE_SIZE = (320, 480)  # width, height of the corpus's good pages
UNKNOWN_CODE = "U+9FA0"  # a valid code point that is not in VOCABULARY


def page_jpeg(size: tuple[int, int] = PAGE_SIZE, *, mode: str = "RGB", seed: int = 0) -> bytes:
    """A small page: paper colour and a few dark strokes, as a JPEG."""
    img = Image.new("RGB", size, (236, 226, 200))
    draw = ImageDraw.Draw(img)
    for i in range(4):
        x = (seed * 37 + i * 71) % max(1, size[0] - 20)
        draw.rectangle((x, 10, x + 12, size[1] - 10), fill=(40, 30, 20))
    buf = io.BytesIO()
    img.convert(mode).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _tiff(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "TIFF")
    return buf.getvalue()


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (80, 80)).save(buf, "GIF")
    return buf.getvalue()


def bomb_png(max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A few kB of PNG that would decode to more pixels than ``max_pixels`` and PIL's limit."""
    side = math.isqrt(max(max_pixels, Image.MAX_IMAGE_PIXELS)) + 1
    return _png(Image.new("1", (side, side)))  # 1 bit per pixel: cheap to build here


def good_boxes(n: int, seed: int = 0, size: tuple[int, int] = PAGE_SIZE) -> list[Box]:
    """``n`` boxes of vocabulary codes, inside a page of ``size``."""
    width, height = size
    return [
        Box(CODES[(seed + i) % len(CODES)], (i * 29) % (width - 30), (i * 41) % (height - 30),
            20 + i % 7, 22 + i % 5)
        for i in range(n)
    ]


def centres(boxes: list[Box]) -> list[Point]:
    return [Point(b.code, *b.center) for b in boxes]


def write_bad_images(store: Store, folder: str = "images", *,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> Expected:
    """Write one file per bad kind of image into ``folder``; the expected quarantine.

    Keys are store-safe, so this works on every backend (an id that is unsafe as a key
    cannot be written through a Store at all; ``-bad`` is safe as a key, unsafe as an id).
    """
    jpeg = page_jpeg()
    # name: (bytes, reason substring, quarantined item: the page id, or the file's name
    # when the file gives no page id)
    files = {
        "bad_truncated.jpg": (jpeg[: len(jpeg) // 2], "cannot decode image", None),
        "bad_empty.jpg": (b"", "empty file", None),
        "bad_pngasjpg.jpg": (_png(Image.new("RGB", PAGE_SIZE, "white")),
                             "file content does not match its name", None),
        "bad_bomb.png": (bomb_png(max_pixels), "decompression bomb", None),
        "bad_float.tif": (_tiff(Image.new("F", PAGE_SIZE)), "unsupported image mode", None),
        "bad_broken.pdf": (b"%PDF-1.7\n1 0 obj\n<< /Type /Cat", "broken PDF", None),
        "bad_tiny.jpg": (page_jpeg((24, 24)), "image width out of limits", None),
        "bad_dup.jpg": (jpeg, "duplicate image id", None),
        "bad_dup.png": (_png(Image.new("RGB", PAGE_SIZE, "white")), "duplicate image id", None),
        "-bad.jpg": (jpeg, "unsafe image id", "-bad.jpg"),
        "bad_notes.txt": (b"not a page\n", "unsupported file type .txt", "bad_notes.txt"),
        "bad_anim.gif": (_gif(), "unsupported file type .gif", "bad_anim.gif"),
    }
    expected = []
    for name, (data, reason, item) in files.items():
        store.write_bytes(join(folder, name), data)
        expected.append((item or name.rpartition(".")[0], reason))
    return expected


# Image files of write_bad_images that are listed in train.csv (with good labels), and
# the reason they get as annotations (a duplicate id is an ambiguous image there).
_BAD_IMAGE_ROWS = {
    "bad_truncated": "cannot decode image",
    "bad_empty": "empty file",
    "bad_pngasjpg": "file content does not match its name",
    "bad_bomb": "decompression bomb",
    "bad_float": "unsupported image mode",
    "bad_tiny": "image width out of limits",
    "bad_dup": "2 image files for one id",
    "bad_missing": "no image file for this id",
}

# Bad label rows on good images: (image id, labels, reason substring).
_BAD_LABEL_ROWS = [
    ("lb_malformed", "U+3042 1 2 3", "not a multiple of 5"),
    ("lb_code", "X+3042 1 2 30 30", "expected a code point"),
    ("lb_negative", "U+3042 10 10 -5 20", "box size must be positive"),
    ("lb_offpage", f"U+3042 {PAGE_SIZE[0] - 20} {PAGE_SIZE[1] - 5} 50 20",
     "box outside the page"),
    ("lb_negxy", "U+3042 -4 -3 20 20", "box outside the page"),
    ("lb_unknown", f"{UNKNOWN_CODE} 10 10 20 20", "code point not in the vocabulary"),
    ("lb_float", "U+3042 1.5 2 30 30", "not an integer"),
    ("lb_dup", "U+3042 10 10 20 20", "duplicate image id"),
    ("lb_dup", "U+3044 10 10 20 20", "duplicate image id"),
    ("../etc/passwd", "U+3042 10 10 20 20", "unsafe image id"),
    ("/abs/page", "U+3042 10 10 20 20", "unsafe image id"),
]


@dataclass
class Corpus:
    """What :func:`write_corpus` wrote and what validation must make of it."""

    good: dict[str, list[str]]  # kind -> ids that must pass
    bad: dict[str, Expected]  # kind -> (item, reason substring), one per quarantine entry
    predictions: str = "submission.csv"
    extra: dict[str, int] = field(default_factory=dict)


def write_corpus(store: Store, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Corpus:
    """A small labelled dataset in ``store`` mixing good pages with every bad kind."""
    store.write_bytes("unicode_translation.csv", write_translation(VOCABULARY))
    good_ids = ["ga_001", "ga_002", "gb_001", "gb_002"]
    label_ids = sorted({i for i, _, _ in _BAD_LABEL_ROWS if "/" not in i})
    for seed, image_id in enumerate(good_ids + label_ids):
        store.write_bytes(f"images/{image_id}.jpg", page_jpeg(seed=seed))
    bad_batch = write_bad_images(store, max_pixels=max_pixels)

    pages = {i: good_boxes(6 + n, seed=n) for n, i in enumerate(good_ids)}
    labels = pages | {i: [Box("U+3042", 2, 2, 10, 10)] for i in _BAD_IMAGE_ROWS}
    rows = [(i, format_labels(b)) for i, b in labels.items()]
    rows += [(i, text) for i, text, _ in _BAD_LABEL_ROWS]
    store.write_bytes("train.csv", write_rows(LABEL_COLUMNS, rows))

    point = "U+3042 15 15"
    bad_predictions = [
        ("lb_malformed", " ".join([point] * 1201), "too many predictions on the page"),
        ("lb_code", f"U+3042 {PAGE_SIZE[0] + 5} {PAGE_SIZE[1] + 1}", "point outside the page"),
        ("lb_negxy", "U+3042 -2 -1", "point outside the page"),
        ("lb_negative", f"{UNKNOWN_CODE} 15 15", "code point not in the vocabulary"),
        ("lb_offpage", "U+3042 15", "not a multiple of 3"),
        ("lb_float", "U+3042 15 y", "y is not a number"),
        ("lb_unknown", point, "duplicate image id"),
        ("lb_unknown", point, "duplicate image id"),
        ("nosuch_001", point, "unknown image id"),
        ("../x", point, "unsafe image id"),
        ("/abs/x", point, "unsafe image id"),
        ("bad_empty", point, "page size unknown"),
    ]
    rows = [(i, format_points(centres(b))) for i, b in pages.items()]
    rows += [(i, text) for i, text, _ in bad_predictions]
    store.write_bytes("submission.csv", write_rows(LABEL_COLUMNS, rows))

    batch_good = good_ids + label_ids
    return Corpus(
        good={"annotations": good_ids, "batch": batch_good, "predictions": good_ids},
        bad={
            "annotations": [*_BAD_IMAGE_ROWS.items()] + [(i, r) for i, _, r in _BAD_LABEL_ROWS],
            "batch": bad_batch,
            "predictions": [(i, r) for i, _, r in bad_predictions],
        },
    )


# Inputs that make a CSV unusable as a whole: the job must fail, not quarantine.
UNUSABLE_CSVS: dict[str, bytes] = {
    "not UTF-8 (Shift_JIS)": "image_id,labels\nあ_001,U+3042 1 2 3 4\n".encode("shift_jis"),
    "wrong columns": b"id,label\na_001,U+3042 1 2 3 4\n",
    "no header (empty file)": b"",
    "ragged rows": b"image_id,labels\na_001,U+3042 1 2 3 4,extra\n",
    "not a CSV (a JPEG)": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)),
}
