"""Pictures of a training run, logged to MLflow beside its metrics (people would rather
look than read): per-book F1 as a chart, a dev page with its predicted boxes and codes,
and the most confused class pairs as a grid of their crops.

Drawn with matplotlib's object API (no pyplot: no global figure state in a job) and PIL.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from kzjobs.data.format import SEG_FP, Box, code_to_char, is_code_point

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

RIGHT, WRONG, TRUTH = (20, 150, 60), (215, 40, 40), (150, 150, 150)


@lru_cache(maxsize=4)
def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A font that draws kana and kanji (the Mincho the synthetic books install), else
    PIL's own, which draws the boxes' codes but not their characters."""
    from kzjobs.synth.fonts import FontNotFoundError, font_path

    try:
        return ImageFont.truetype(str(font_path("ipaex-mincho")), size)
    except (FontNotFoundError, OSError):
        return ImageFont.load_default(size)


def _char(code: str) -> str:
    return code_to_char(code) if is_code_point(code) else code


def f1_by_book_chart(by_book: Mapping[str, float], title: str,
                     overall: float | None = None) -> Figure:
    """A bar a book, its F1 written on it; the overall F1 as a line across."""
    from matplotlib.figure import Figure

    books = sorted(by_book)
    fig = Figure(figsize=(max(4.0, 0.6 * len(books) + 2.0), 3.2), dpi=100)
    ax = fig.subplots()
    bars = ax.bar(books, [by_book[b] for b in books], color="#3a6ea5")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    if overall is not None:
        ax.axhline(overall, color="#d12", linewidth=1, label=f"all books {overall:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set(ylim=(0, 1.08), ylabel="F1", title=title)
    ax.tick_params(axis="x", labelrotation=45 if len(books) > 8 else 0)
    fig.tight_layout()
    return fig


def page_with_predictions(image: Image.Image, truth: Sequence[Box],
                          predicted: Sequence[Box], *, ignore_code: bool = False,
                          height: int = 1400) -> Image.Image:
    """The page with its true boxes (grey), and each predicted box with its character,
    green where the competition would count it (the same code as the true box its centre
    lies in; any code with ``ignore_code``, as detection F1 counts), red where not.
    Predicted ``seg_fp`` boxes are dropped, as the metric drops them."""
    scale = min(1.0, height / image.height)
    page = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)))
    draw = ImageDraw.Draw(page)
    font = label_font(max(10, round(0.012 * page.height)))

    def xyxy(b: Box) -> tuple[float, float, float, float]:
        return b.x * scale, b.y * scale, (b.x + b.w) * scale, (b.y + b.h) * scale

    for b in truth:
        draw.rectangle(xyxy(b), outline=TRUTH, width=1)
    for p in predicted:
        if p.code == SEG_FP:
            continue
        cx, cy = p.center
        right = any((ignore_code or t.code == p.code) and t.x < cx < t.x + t.w
                    and t.y < cy < t.y + t.h for t in truth)
        colour = RIGHT if right else WRONG
        _, y0, x1, _ = xyxy(p)
        draw.rectangle(xyxy(p), outline=colour, width=2)
        draw.text((x1 + 2, y0), _char(p.code), fill=colour, font=font)
    return page


def confused_pairs_grid(pairs: Sequence[tuple[str, str, int]],
                        examples: Mapping[tuple[str, str], Sequence[Image.Image]],
                        *, cell: int = 64) -> Image.Image:
    """One row a pair: ``true -> predicted (n boxes)``, then crops of true-class boxes the
    model called the other class."""
    per_row = max((len(examples.get((a, b), ())) for a, b, _ in pairs), default=0)
    label_w = 6 * cell
    grid = Image.new("RGB", (label_w + max(1, per_row) * (cell + 4), max(1, len(pairs)) *
                             (cell + 8)), "white")
    draw = ImageDraw.Draw(grid)
    font = label_font(cell // 3)
    for row, (label, pred, n) in enumerate(pairs):
        y = row * (cell + 8) + 4
        draw.text((4, y + cell // 3), f"{_char(label)} → {_char(pred)}  ({n})", fill="black",
                  font=font)
        for i, crop in enumerate(examples.get((label, pred), ())):
            crop = crop.convert("RGB")
            crop.thumbnail((cell, cell))
            grid.paste(crop, (label_w + i * (cell + 4), y))
    return grid


def classifier_pictures(
    pairs: Sequence[tuple[str, int, str, str]],
    boxes: Mapping[str, Sequence[Box]],
    truth: Mapping[str, Sequence[Box]],
    by_book: Mapping[str, float],
    read_image: Callable[[str], Image.Image],
    *,
    title: str,
    overall: float | None = None,
    top_pairs: int = 8,
    per_pair: int = 6,
) -> dict[str, Any]:
    """``{artifact name: Figure or Image}`` of a classifier's dev pages.

    ``pairs`` holds ``(image_id, box_id, label, predicted)`` for every box judged, where
    ``box_id`` indexes ``boxes[image_id]``. The page shown is the dev page with the most
    characters; crops are read one page at a time."""
    pictures: dict[str, Any] = {}
    if by_book:
        pictures["valid_f1_by_book.png"] = f1_by_book_chart(by_book, title, overall)
    pages = sorted({image_id for image_id, *_ in pairs}, key=lambda i: (-len(truth.get(i, ())), i))
    if pages:
        page = pages[0]
        predicted = [Box(pred, *_xywh(boxes[page][box_id]))
                     for image_id, box_id, _, pred in pairs if image_id == page]
        pictures["valid_page.png"] = page_with_predictions(read_image(page), truth[page],
                                                           predicted)
    confused = Counter((label, pred) for _, _, label, pred in pairs
                       if label != pred and label != SEG_FP)
    top = confused.most_common(top_pairs)
    if top:
        wanted = {pair for pair, _ in top}
        examples: dict[tuple[str, str], list[Image.Image]] = {}
        by_page: dict[str, list[tuple[int, tuple[str, str]]]] = {}
        for image_id, box_id, label, pred in pairs:
            if (label, pred) in wanted:
                by_page.setdefault(image_id, []).append((box_id, (label, pred)))
        for image_id, found in by_page.items():
            if all(len(examples.get(p, ())) >= per_pair for p in wanted):
                break
            image = read_image(image_id)
            for box_id, pair in found:
                if len(examples.setdefault(pair, [])) < per_pair:
                    b = boxes[image_id][box_id]
                    examples[pair].append(image.crop((b.x, b.y, b.x + b.w, b.y + b.h)))
        pictures["confused_pairs.png"] = confused_pairs_grid(
            [(a, b, n) for (a, b), n in top], examples)
    return pictures


def _xywh(b: Box) -> tuple[int, int, int, int]:
    return b.x, b.y, b.w, b.h


def log_pictures(pictures: Mapping[str, Any]) -> None:
    """Log each picture to the active MLflow run under its name."""
    import mlflow
    from matplotlib.figure import Figure

    for name, picture in pictures.items():
        if isinstance(picture, Figure):
            mlflow.log_figure(picture, name)
        else:
            mlflow.log_image(picture, artifact_file=name)
