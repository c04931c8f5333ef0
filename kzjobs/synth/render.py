"""Page layout: characters in vertical columns read right to left, each with a tight
ground-truth box, plus what is drawn but must not be predicted (glosses beside columns,
marks, red seals, frames and ruled lines).

A layout is ink masks placed on the page (``Stamp``) and line segments. Each glyph is
rendered once per font/size (``fonts.glyph_mask``); rotation jitter is applied to the
cropped mask, and the box is the mask's extent *after* rotation, so a box is exactly the
ink drawn for its character.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw

from kzjobs.data.format import Box, char_to_code
from kzjobs.synth.fonts import coverage, crop_to_ink, font_spec, glyph_mask
from kzjobs.synth.style import MAX_HEIGHT, MIN_HEIGHT, BookStyle
from kzjobs.synth.text import BookText, shared_text
from kzjobs.synth.vocab import Vocabulary

# Distractors keep this many px away from every character box, so no gloss, mark or seal
# ink falls inside a ground-truth box.
CLEARANCE = 3


@dataclass(frozen=True)
class Stamp:
    """An ink mask placed with its top-left corner at (x, y)."""

    mask: np.ndarray  # uint8, cropped to its ink
    x: int
    y: int
    kind: str  # "char", "gloss", "mark", "seal"
    code: str | None = None  # the code point of an annotated character

    @property
    def w(self) -> int:
        return self.mask.shape[1]

    @property
    def h(self) -> int:
        return self.mask.shape[0]

    @property
    def box(self) -> Box:
        return Box(self.code or "", self.x, self.y, self.w, self.h)


@dataclass
class PageLayout:
    width: int
    height: int
    chars: list[Stamp] = field(default_factory=list)  # annotated, in reading order
    extras: list[Stamp] = field(default_factory=list)  # ink, not annotated
    seals: list[Stamp] = field(default_factory=list)  # red, not annotated
    lines: list[tuple[tuple[int, int, int, int], int]] = field(default_factory=list)

    @property
    def boxes(self) -> list[Box]:
        return [s.box for s in self.chars]

    @property
    def distractors(self) -> Counter[str]:
        """How many of each thing is drawn but not annotated."""
        counts = Counter(s.kind for s in self.extras + self.seals)
        counts["line"] = len(self.lines)
        return counts


@cache
def font_chars(font: str, chars: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(coverage(font, chars))


def _snap(value: float) -> int:
    # Sizes snap to steps of about 5% so the glyph cache gets hits.
    step = max(2, int(value) // 20)
    return max(8, round(value / step) * step)


def _rotate(mask: np.ndarray, angle: float) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(mask))
    return crop_to_ink(np.asarray(img.rotate(angle, resample=Image.BILINEAR, expand=True)))


@lru_cache(maxsize=16384)
def _glyph(font: str, char: str, size: int, weight: int, angle: float) -> np.ndarray:
    """A glyph's mask turned by ``angle`` degrees (quantised by the caller so common
    characters hit the cache), cropped to its ink after turning."""
    mask = glyph_mask(font, char, size, weight)
    if angle == 0 or mask.size == 0:
        return mask
    mask = _rotate(mask, angle)
    mask.flags.writeable = False
    return mask


def _shade(mask: np.ndarray, factor: float) -> np.ndarray:
    # Ink variation; every pixel kept by crop_to_ink stays > 0, so the box stays tight.
    return np.maximum((mask * factor).astype(np.uint8), (mask > 0).astype(np.uint8))


class _Occupancy:
    """Where ink of characters (and placed distractors) is, so distractors keep clear."""

    def __init__(self, height: int, width: int) -> None:
        self.taken = np.zeros((height, width), bool)
        self.height, self.width = height, width

    def add(self, x: int, y: int, w: int, h: int) -> None:
        self.taken[y : y + h, x : x + w] = True

    def free(self, x: int, y: int, w: int, h: int, margin: int = CLEARANCE) -> bool:
        if x < 1 or y < 1 or x + w >= self.width or y + h >= self.height:
            return False
        y0, x0 = max(0, y - margin), max(0, x - margin)
        return not self.taken[y0 : y + h + margin, x0 : x + w + margin].any()


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Marks written beside the text: rings, dots, ticks (return marks), short bars."""
    size = max(size, 6)
    img = Image.new("L", (size + 4, size + 4), 0)
    draw = ImageDraw.Draw(img)
    width = max(1, size // 7)
    if kind == "ring":
        draw.ellipse((2, 2, size + 1, size + 1), outline=255, width=width + 1)
    elif kind == "dot":
        draw.ellipse((2, 2, size + 1, size + 1), fill=255)
    elif kind == "tick":  # a return mark: a short stroke and a longer rising one
        draw.line((2, size // 3, size // 2, size // 2), fill=255, width=width + 1)
        draw.line((size // 2, size // 2, size + 1, 2), fill=255, width=width + 1)
    else:  # bar
        draw.line((2 + size // 2, 2, 2 + size // 2 + int(rng.integers(-2, 3)), size + 1),
                  fill=255, width=width + 1)
    return crop_to_ink(np.asarray(img))


def _seal_mask(rng: np.random.Generator, font: str, size: int, kanji: list[str]) -> np.ndarray:
    """A seal: square or round, red text carved out of red (or red text in a red border)."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    round_seal = rng.random() < 0.3
    negative = rng.random() < 0.5  # white text carved out of a red field
    border = max(3, size // 14)
    shape = (0, 0, size - 1, size - 1)
    paint = draw.ellipse if round_seal else draw.rectangle
    if negative:
        paint(shape, fill=255)
    else:
        paint(shape, outline=255, width=border)
    canvas = np.array(img)
    grid = 1 if round_seal else int(rng.choice([1, 2]))
    cell = (size - 2 * border) // grid
    for row in range(grid):
        for col in range(grid):
            glyph = glyph_mask(font, kanji[int(rng.integers(len(kanji)))], _snap(cell * 0.8), 1)
            if glyph.size == 0:
                continue
            gh, gw = min(glyph.shape[0], cell), min(glyph.shape[1], cell)
            y = border + row * cell + (cell - gh) // 2
            x = border + col * cell + (cell - gw) // 2
            region = canvas[y : y + gh, x : x + gw]
            if negative:
                region[:] = np.where(glyph[:gh, :gw] > 0, 0, region)
            else:
                np.maximum(region, glyph[:gh, :gw], out=region)
    # Uneven seal paste: the red fades in patches.
    patch = rng.uniform(0.55, 1.0, size=(6, 6)).astype(np.float32)
    fade = np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))
    return crop_to_ink((canvas * fade).astype(np.uint8))


def layout_page(style: BookStyle, vocab: Vocabulary, rng: np.random.Generator, *,
                distractors: bool = True, text: BookText | None = None) -> PageLayout:
    """Place the characters of one page (and, unless disabled, its distractors): the
    book's ``text`` (default: the shared frequency list, ``synth.text.shared_text``)."""
    height = int(np.clip(round(style.height * rng.uniform(0.98, 1.02)), MIN_HEIGHT, MAX_HEIGHT))
    width = round(height * style.aspect * rng.uniform(0.99, 1.01))
    page = PageLayout(width, height)
    m_top, m_right, m_bottom, m_left = style.margins
    top, bottom = round(height * m_top), round(height * (1 - m_bottom))
    left, right = round(width * m_left), round(width * (1 - m_right))
    pitch = (right - left) / style.columns
    cs = style.char_size
    occupied = _Occupancy(height, width)

    allowed = font_chars(style.font, vocab.chars)
    kana = vocab.kana
    chars = (text or shared_text(vocab, allowed, style.kana_share)).chars(rng)
    # The last page of a chapter leaves columns empty.
    used = style.columns if rng.random() > 0.15 else int(rng.integers(1, style.columns))
    for col in range(used):  # right to left
        centre = right - (col + 0.5) * pitch + rng.normal(0, 0.02 * pitch)
        slope = float(np.clip(rng.normal(0, 0.004), -0.01, 0.01))
        y = top + (rng.uniform(0.5, 2.0) * cs if rng.random() < 0.2 else 0.0)
        end = bottom if rng.random() > 0.12 else top + rng.uniform(0.2, 0.9) * (bottom - top)
        ring_size = _snap(cs * rng.uniform(0.3, 0.5))
        if rng.random() < style.mark_rate * 3:
            # A ring opening a paragraph, in the column's flow, not a character. (Drawn
            # or not, it takes its place, so the characters do not depend on `distractors`.)
            ring = _shape_mask("ring", ring_size, rng)
            x = round(centre - ring.shape[1] / 2)
            if distractors:
                page.extras.append(Stamp(ring, x, round(y), "mark"))
                occupied.add(x, round(y), ring.shape[1], ring.shape[0])
            y += ring.shape[0] + cs * 0.2
        while True:
            char = next(chars)
            is_kana = char in kana
            scale = rng.uniform(0.7, 0.92) if is_kana else rng.uniform(0.88, 1.08)
            angle = round(rng.uniform(-style.rotation, style.rotation) * 2) / 2  # 0.5 deg
            mask = _glyph(style.font, char, _snap(cs * scale), style.weight, angle)
            if mask.size == 0:  # coverage() already drops these; never box a blank
                continue
            mask = _shade(mask, rng.uniform(0.72, 1.0))
            h, w = mask.shape
            if y + h > end:
                break
            drift = slope * (y - top) + rng.normal(0, 0.03 * cs)
            x = int(np.clip(round(centre + drift - w / 2), 2, width - w - 2))
            page.chars.append(Stamp(mask, x, round(y), "char", char_to_code(char)))
            occupied.add(x, round(y), w, h)
            y += h + cs * style.spacing * rng.uniform(1 / 3, 5 / 3)
    if distractors:
        _add_lines(page, style, rng, occupied, (left, top, right, bottom), pitch)
        _add_glosses(page, style, vocab, allowed, rng, occupied)
        _add_marks(page, style, rng, occupied)
        _add_seals(page, style, vocab, allowed, rng, occupied)
    return page


def _add_lines(page: PageLayout, style: BookStyle, rng: np.random.Generator,
               occupied: _Occupancy, block: tuple[int, int, int, int], pitch: float) -> None:
    """A frame round the text block, maybe doubled, and ruled lines between columns."""
    left, top, right, bottom = block
    cs = style.char_size
    pad_x, pad_y = round(0.12 * pitch), round(0.3 * cs)
    x0, y0, x1, y1 = left - pad_x, top - pad_y, right + pad_x, bottom + pad_y
    x0, y0 = max(x0, 4), max(y0, 4)
    x1, y1 = min(x1, page.width - 5), min(y1, page.height - 5)
    if style.frame:
        thick = int(rng.integers(3, 7))
        page.lines += [((x0, y0, x1, y0), thick), ((x1, y0, x1, y1), thick),
                       ((x1, y1, x0, y1), thick), ((x0, y1, x0, y0), thick)]
        if style.double_frame:
            gap = int(rng.integers(8, 14))
            if x0 - gap > 2 and y0 - gap > 2 and x1 + gap < page.width - 3 \
                    and y1 + gap < page.height - 3:
                a, b, c, d = x0 - gap, y0 - gap, x1 + gap, y1 + gap
                page.lines += [((a, b, c, b), 2), ((c, b, c, d), 2), ((c, d, a, d), 2),
                               ((a, d, a, b), 2)]
    if style.ruled:
        thin = int(rng.integers(1, 4))
        for k in range(1, style.columns):
            x = round(right - k * pitch)
            # A drifting column may reach the rule: break the rule there, never cross a box.
            strip = occupied.taken[y0:y1, max(0, x - thin - CLEARANCE) : x + thin + CLEARANCE]
            free = np.concatenate([[False], ~strip.any(axis=1), [False]])
            edges = np.flatnonzero(np.diff(free.astype(np.int8)))
            for start, stop in zip(edges[::2], edges[1::2], strict=True):
                if stop - start > 10:
                    page.lines.append(((x, y0 + start, x, y0 + stop - 1), thin))


def _add_glosses(page: PageLayout, style: BookStyle, vocab: Vocabulary,
                 allowed: tuple[str, ...], rng: np.random.Generator,
                 occupied: _Occupancy) -> None:
    """Small kana beside a character (readings, like furigana), in the gap between
    columns. Not annotated: the competition's annotations hold the main text only, so a
    reader must learn to pass over readings beside it."""
    kana_probs = vocab.probabilities(allowed, 0.999)  # nearly only kana
    cs = style.char_size
    for stamp in list(page.chars):
        if rng.random() >= style.gloss_rate:
            continue
        size = _snap(cs * rng.uniform(0.26, 0.36))
        n = int(rng.integers(1, 4))
        picks = rng.choice(len(allowed), size=n, p=kana_probs)
        right_side = rng.random() < 0.8
        masks = [glyph_mask(style.font, allowed[i], size, 0) for i in picks]
        masks = [m for m in masks if m.size]
        y = stamp.y
        placed = []
        for m in masks:
            x = stamp.x + stamp.w + 4 if right_side else stamp.x - m.shape[1] - 4
            if not occupied.free(x, y, m.shape[1], m.shape[0]):
                placed = []
                break
            placed.append(Stamp(m, x, y, "gloss"))
            y += m.shape[0] + 2
        for s in placed:
            page.extras.append(s)
            occupied.add(s.x, s.y, s.w, s.h)


def _add_marks(page: PageLayout, style: BookStyle, rng: np.random.Generator,
               occupied: _Occupancy) -> None:
    """Punctuation-like dots, rings, return marks and bars beside characters."""
    cs = style.char_size
    for stamp in list(page.chars):
        if rng.random() >= style.mark_rate:
            continue
        kind = str(rng.choice(["ring", "dot", "tick", "bar"]))
        size = _snap(cs * (rng.uniform(0.1, 0.18) if kind == "dot" else rng.uniform(0.16, 0.3)))
        mask = _shade(_shape_mask(kind, size, rng), rng.uniform(0.75, 1.0))
        x = stamp.x + stamp.w + 5 if rng.random() < 0.7 else stamp.x - mask.shape[1] - 5
        y = stamp.y + int(rng.integers(0, max(1, stamp.h - mask.shape[0] + 1)))
        if occupied.free(x, y, mask.shape[1], mask.shape[0]):
            page.extras.append(Stamp(mask, x, y, "mark"))
            occupied.add(x, y, mask.shape[1], mask.shape[0])


def _add_seals(page: PageLayout, style: BookStyle, vocab: Vocabulary,
               allowed: tuple[str, ...], rng: np.random.Generator,
               occupied: _Occupancy) -> None:
    """Red ownership seals, where they do not cover a character."""
    if rng.random() >= style.seal_rate:
        return
    kanji = [c for c in allowed[:800] if c not in vocab.kana] or list(allowed)
    count = 1 + int(rng.random() < 0.3)
    cs = style.char_size
    for _ in range(count):
        size = int(np.clip(cs * rng.uniform(1.0, 2.0), 70, 240))
        mask = _seal_mask(rng, style.font, size, kanji)
        for _try in range(40):
            x = int(rng.integers(4, page.width - mask.shape[1] - 4))
            y = int(rng.integers(4, page.height - mask.shape[0] - 4))
            if occupied.free(x, y, mask.shape[1], mask.shape[0], margin=2 * CLEARANCE):
                page.seals.append(Stamp(mask, x, y, "seal"))
                occupied.add(x, y, mask.shape[1], mask.shape[0])
                break


def ink_layer(page: PageLayout, stamps: list[Stamp], *, lines: bool = False) -> np.ndarray:
    """The page's ink alpha (uint8, height x width) of ``stamps`` (and the lines)."""
    if lines and page.lines:
        img = Image.new("L", (page.width, page.height), 0)
        draw = ImageDraw.Draw(img)
        for (x0, y0, x1, y1), width in page.lines:
            draw.line((x0, y0, x1, y1), fill=255, width=width)
        alpha = np.array(img)
    else:
        alpha = np.zeros((page.height, page.width), np.uint8)
    for s in stamps:
        region = alpha[s.y : s.y + s.h, s.x : s.x + s.w]
        np.maximum(region, s.mask, out=region)
    return alpha


def is_cursive(font: str) -> bool:
    return font_spec(font).style == "cursive"
