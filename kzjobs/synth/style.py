"""The style of a synthetic book. A book is a font plus a style: every page of a book
shares its ink, brush weight, columns, character size, paper and scanner."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

MIN_HEIGHT, MAX_HEIGHT = 1600, 2400
MIN_COLUMNS, MAX_COLUMNS = 6, 12

RGB = tuple[int, int, int]


class BookStyle(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    font: str
    # Page and layout
    height: int = Field(ge=MIN_HEIGHT, le=MAX_HEIGHT)  # typical page height; pages vary a little
    aspect: float = Field(gt=0.4, lt=1.2)  # width / height
    columns: int = Field(ge=MIN_COLUMNS, le=MAX_COLUMNS)
    char_size: int = Field(gt=8)  # font size in px of a kanji
    margins: tuple[float, float, float, float]  # top, right, bottom, left, as page fractions
    kana_share: float = Field(gt=0, lt=1)
    # The gap between characters in a column, as a share of the character size (each gap
    # varies around it); 0.18 is the one gap of books made before it varied by book.
    spacing: float = Field(default=0.18, ge=0, le=1)
    # Ink
    ink: RGB
    weight: int = Field(ge=0, le=2)  # stroke dilations: a heavier brush
    rotation: float = Field(ge=0, le=10)  # max per-character rotation, degrees
    # Things drawn but not annotated
    frame: bool
    double_frame: bool
    ruled: bool
    gloss_rate: float = Field(ge=0, le=1)  # per character
    mark_rate: float = Field(ge=0, le=1)  # per character
    seal_rate: float = Field(ge=0, le=1)  # per page
    # Paper and scan
    paper: RGB
    grain: float = Field(ge=0)
    stains: float = Field(ge=0)  # expected stains per page
    bleed: float = Field(ge=0, le=1)  # show-through of the other side
    blur: float = Field(ge=0)  # Gaussian radius, px
    jpeg_quality: int = Field(ge=30, le=100)


def _rgb(values: np.ndarray) -> RGB:
    r, g, b = (int(v) for v in np.rint(np.clip(values, 0, 255)))
    return r, g, b


def sample_style(rng: np.random.Generator, font: str, *, cursive: bool = True) -> BookStyle:
    """A random book style for ``font``. Print (Mincho) faces get a heavier brush and more
    rotation than ``cursive`` ones, so that they look less typeset."""
    height = int(rng.integers(MIN_HEIGHT + 60, MAX_HEIGHT - 60))
    aspect = float(rng.uniform(0.62, 0.8))
    columns = int(rng.integers(MIN_COLUMNS, MAX_COLUMNS + 1))
    top, bottom = rng.uniform(0.06, 0.1, size=2)
    side = rng.uniform(0.07, 0.11, size=2)
    text_width = height * aspect * (1 - side.sum())
    fill = rng.uniform(0.5, 0.74)  # share of a column's pitch the characters take
    char_size = int(min(text_width / columns * fill, 150))
    ink_tone = rng.uniform(10, 38)  # black to brownish-black sumi
    ink = _rgb(ink_tone + rng.normal(0, 4, size=3) + np.array([8, 2, -6]) * rng.uniform(0, 1.5))
    paper = _rgb(np.array([238, 226, 198]) + rng.normal(0, 6) + rng.normal(0, 4, size=3))
    return BookStyle(
        font=font,
        height=height,
        aspect=aspect,
        columns=columns,
        char_size=char_size,
        margins=(float(top), float(side[0]), float(bottom), float(side[1])),
        # from kanbun-heavy commentaries to kana-heavy tales
        kana_share=float(rng.uniform(0.5, 0.8)),
        spacing=float(rng.uniform(0.04, 0.4)),
        ink=ink,
        weight=int(rng.choice([0, 0, 1])) if cursive else int(rng.choice([0, 1, 1])),
        rotation=float(rng.uniform(0.3, 3.5) if cursive else rng.uniform(1.5, 4.0)),
        frame=bool(rng.random() < 0.6),
        double_frame=bool(rng.random() < 0.4),
        ruled=bool(rng.random() < 0.4),
        # Some books have no readings beside the text, some many (popular illustrated books).
        gloss_rate=float(rng.choice([0.0, rng.uniform(0.01, 0.06), rng.uniform(0.06, 0.12)],
                                    p=[0.2, 0.55, 0.25])),
        mark_rate=float(rng.uniform(0.005, 0.03)),
        seal_rate=float(rng.uniform(0.3, 0.9)),
        grain=float(rng.uniform(2.0, 6.0)),
        stains=float(rng.uniform(0.0, 3.5)),
        bleed=float(rng.choice([0.0, rng.uniform(0.04, 0.12)])),
        blur=float(rng.uniform(0.2, 1.5)),
        jpeg_quality=int(rng.integers(62, 94)),
        paper=paper,
    )
