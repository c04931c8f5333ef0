"""Rendered glyph crops: each code point of the vocabulary in each font, one a crop.

A crop is a column snippet: the character in the middle with its neighbours above and
below, cut by the crop's edges, as the ROI classifier sees a box on a page (its 3x3
cells of layer3 reach past the box, so a lone glyph on blank paper would teach it a
context pages never have).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch

from kzjobs.pretrain.config import PretrainConfig

INK_TONE = (10, 45)  # sumi black to brownish-black, as the synthetic books
PAPER = np.array([238.0, 226.0, 198.0])


def font_ids(config: PretrainConfig) -> tuple[str, ...]:
    from kzjobs.synth.fonts import split

    return tuple(config.fonts) if config.fonts else split("train")


def vocabulary_chars(config: PretrainConfig) -> tuple[str, ...]:
    """The characters, in the vocabulary's order (the head's rows)."""
    from kzjobs.synth.vocab import load_vocabulary

    vocab = load_vocabulary()
    if config.vocabulary_size:
        vocab = vocab.most_frequent(config.vocabulary_size)
    return vocab.chars


@cache
def _pairs(fonts: tuple[str, ...], chars: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every (font, class) a font draws: one epoch of glyphs."""
    from kzjobs.synth.render import font_chars

    index = {c: i for i, c in enumerate(chars)}
    pairs = [(f, index[c]) for f, font in enumerate(fonts) for c in font_chars(font, chars)]
    if not pairs:
        raise ValueError(f"fonts {fonts} draw none of the {len(chars)} characters")
    array = np.array(pairs, dtype=np.int64)
    return array[:, 0], array[:, 1]


class GlyphCrops(torch.utils.data.Dataset):
    """Item ``i`` is a random crop, a pure function of ``(seed, i)``: image (3,h,w), the
    box of its middle character (1,4) in crop pixels, and its class."""

    def __init__(self, config: PretrainConfig, length: int, seed: int) -> None:
        from kzjobs.classify.config import ClassifyConfig
        from kzjobs.classify.dataset import augmentations

        self.config = config
        self.fonts = font_ids(config)
        self.chars = vocabulary_chars(config)
        self.font_of, self.class_of = _pairs(self.fonts, self.chars)
        self.length = length
        self.seed = seed
        self.transform = augmentations(ClassifyConfig(shape_p=config.shape_p), scan=True)
        self._drawn: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def _font_chars(self, f: int) -> np.ndarray:
        if f not in self._drawn:
            self._drawn[f] = self.class_of[self.font_of == f]
        return self._drawn[f]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rng = np.random.default_rng((self.seed, i))
        pick = int(rng.integers(len(self.class_of)))
        font, label = int(self.font_of[pick]), int(self.class_of[pick])
        image, box = self.render(rng, font, label)
        # Albumentations draws from its own generator, which seed_everything leaves alone.
        self.transform.set_random_seed(int(rng.integers(2**31)))
        out = self.transform(image=image)
        return out["image"], torch.tensor([box], dtype=torch.float32), label

    def render(self, rng: np.random.Generator, f: int, label: int
               ) -> tuple[np.ndarray, list[float]]:
        from kzjobs.synth.render import _glyph

        height, width = self.config.crop
        lo, hi = self.config.char_size
        size = int(rng.integers(lo, hi + 1))
        weight = int(rng.choice([0, 0, 1]))
        font = self.fonts[f]
        ink = np.zeros((height, width), np.float32)

        def glyph(char: str) -> np.ndarray:
            angle = float(np.round(rng.uniform(-3, 3)))
            return _glyph(font, char, size, weight, angle)

        mask = glyph(self.chars[label])
        h, w = mask.shape
        x = (width - w) // 2 + int(rng.integers(-2, 3))
        y = (height - h) // 2 + int(rng.integers(-2, 3))
        _paste(ink, mask, x, y)
        box = [float(x), float(y), float(x + w), float(y + h)]
        # Neighbours in the column, above and below, a gap of 5-40% of the size apart.
        others = self._font_chars(f)
        for step in (-1, 1):
            edge = y if step < 0 else y + h
            while 0 < edge < height:
                m = glyph(self.chars[int(others[rng.integers(len(others))])])
                gap = int(size * rng.uniform(0.05, 0.4))
                top = edge - gap - m.shape[0] if step < 0 else edge + gap
                _paste(ink, m, (width - m.shape[1]) // 2 + int(rng.integers(-4, 5)), top)
                edge = top if step < 0 else top + m.shape[0]
        paper = PAPER + rng.normal(0, 8) + rng.normal(0, 5, size=3)
        tone = rng.uniform(*INK_TONE)
        alpha = (ink / 255.0)[..., None] * rng.uniform(0.8, 1.0)
        image = paper * (1 - alpha) + tone * alpha
        image += rng.normal(0, rng.uniform(0, 6), size=image.shape)
        return np.clip(image, 0, 255).astype(np.uint8), box


def _paste(canvas: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Ink ``mask`` onto ``canvas`` at (x, y), the parts outside cut off."""
    h, w = mask.shape
    top, left = max(0, y), max(0, x)
    bottom, right = min(canvas.shape[0], y + h), min(canvas.shape[1], x + w)
    if bottom <= top or right <= left:
        return
    part = mask[top - y: bottom - y, left - x: right - x]
    np.maximum(canvas[top:bottom, left:right], part, out=canvas[top:bottom, left:right])


def collate(items: list[tuple[torch.Tensor, torch.Tensor, int]]) -> dict[str, Any]:
    return {"images": torch.stack([i[0] for i in items]),
            "boxes": [i[1] for i in items],
            "targets": torch.tensor([i[2] for i in items])}
