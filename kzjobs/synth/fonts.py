"""The fonts of synthetic books: where their files are, which characters they draw,
and each glyph rendered once per size as an ink mask.

Fonts come from Debian packages (``make fonts`` installs them). A missing file is a
clear error that names the package to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

FONT_ROOTS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
# Pixels fainter than this (of 255) are anti-aliasing fringe, not ink: they are cut off
# so that a ground-truth box hugs visible ink and no glyph draws outside its box.
INK_THRESHOLD = 48


class FontNotFoundError(FileNotFoundError):
    """A font's file is not installed; the message names the Debian package."""


@dataclass(frozen=True)
class FontSpec:
    id: str
    file: str  # path under a font root, as the Debian package installs it
    package: str  # the Debian package that ships it
    # "cursive": a brush hand, drawn as it is; "print": Mincho and pen hands, drawn with a
    # heavier brush and more rotation so that they look less typeset (style.sample_style).
    style: str


_SPECS = (
    FontSpec("kouzan-sousyo", "truetype/kouzan-mouhitsu/KouzanBrushFontSousyo.ttf",
             "fonts-kouzan-mouhitsu", "cursive"),
    FontSpec("kouzan-gyousyo", "truetype/kouzan-mouhitsu/kouzan-mouhitsu-gyosho.ttf",
             "fonts-kouzan-mouhitsu", "cursive"),
    FontSpec("kouzan-brush", "truetype/kouzan-mouhitsu/kouzan-mouhitsu.ttf",
             "fonts-kouzan-mouhitsu", "cursive"),
    FontSpec("aoyagi-kouzan", "truetype/aoyagi-kouzan-t/AoyagiKouzanT.ttf",
             "fonts-aoyagi-kouzan-t", "cursive"),
    FontSpec("ipaex-mincho", "opentype/ipaexfont-mincho/ipaexm.ttf",
             "fonts-ipaexfont-mincho", "print"),
    FontSpec("hanazono", "truetype/hanazono/HanaMinA.ttf", "fonts-hanazono", "print"),
    # More hands for training (each draws 397-400 of the bench's 400 characters):
    # one more brush, three pen hands and four old-style Mincho faces.
    FontSpec("aoyagi-soseki", "truetype/aoyagi-soseki/aoyagi-soseki.ttf",
             "fonts-aoyagi-soseki", "cursive"),
    FontSpec("kiloji", "truetype/kiloji/kiloji.ttf", "fonts-kiloji", "print"),
    FontSpec("seto", "truetype/seto/setofont.ttf", "fonts-seto", "print"),
    FontSpec("klee", "truetype/klee/KleeOne-Regular.ttf", "fonts-klee", "print"),
    FontSpec("dejima-mincho", "truetype/dejima-mincho/dejima-mincho-r227.ttf",
             "fonts-dejima-mincho", "print"),
    FontSpec("oradano-mincho", "truetype/oradano-mincho/OradanoGSRR.ttf",
             "fonts-oradano-mincho-gsrr", "print"),
    FontSpec("ume-mincho", "truetype/horai-umefont/ume-tmo3.ttf", "fonts-horai-umefont",
             "print"),
    FontSpec("sawarabi-mincho", "truetype/sawarabi-mincho/sawarabi-mincho-medium.ttf",
             "fonts-sawarabi-mincho", "print"),
)
FONT_SPECS: dict[str, FontSpec] = {s.id: s for s in _SPECS}
FONTS: tuple[str, ...] = tuple(FONT_SPECS)

SetName = Literal["train", "dev", "test"]


class FontSplit(BaseModel):
    """Which fonts each set of books is written in. Dev books (every A/B, threshold and
    choice is judged on them) and test books (read once per run, and reported) are in
    hands the training never sees, and no test font is a dev font. Each set has a brush
    hand and a print one. Dev keeps the bench's old held-out fonts; test takes the one
    brush of another calligrapher (Aoyagi Soseki; the other four brushes are all Aoyagi
    Kouzan's) and a pen hand, each drawing at least 2,900 of the 3,119 code points."""

    model_config = ConfigDict(frozen=True)

    dev: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def train(self) -> tuple[str, ...]:
        held = set(self.dev) | set(self.test)
        return tuple(f for f in FONTS if f not in held)

    @model_validator(mode="after")
    def _apart(self) -> FontSplit:
        if unknown := set(self.dev + self.test) - set(FONTS):
            raise ValueError(f"unknown fonts {sorted(unknown)}: use those of FONTS")
        if shared := set(self.dev) & set(self.test):
            raise ValueError(f"a test font must not be a dev font: {sorted(shared)}")
        if len(set(self.dev)) != len(self.dev) or len(set(self.test)) != len(self.test):
            raise ValueError("a font is listed twice")
        return self

    def of(self, name: SetName) -> tuple[str, ...]:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]

    def set_of(self, font: str) -> SetName:
        """The set whose books are written in ``font``."""
        font_spec(font)
        return "dev" if font in self.dev else "test" if font in self.test else "train"


FONT_SPLIT = FontSplit(dev=("kouzan-gyousyo", "ipaex-mincho"), test=("aoyagi-soseki", "klee"))


def split(name: SetName) -> tuple[str, ...]:
    """The fonts of the ``train``, ``dev`` or ``test`` books (:data:`FONT_SPLIT`)."""
    if name not in ("train", "dev", "test"):
        raise ValueError(f"a set is train, dev or test, not {name!r}")
    return FONT_SPLIT.of(name)


def font_spec(font_id: str) -> FontSpec:
    try:
        return FONT_SPECS[font_id]
    except KeyError:
        raise ValueError(f"unknown font {font_id!r}: use one of {', '.join(FONTS)}") from None


@cache
def font_path(font_id: str) -> Path:
    """The font's file: the Debian path first, else the same file name anywhere under a root."""
    spec = font_spec(font_id)
    for root in FONT_ROOTS:
        if (root / spec.file).is_file():
            return root / spec.file
    name = Path(spec.file).name
    for root in FONT_ROOTS:
        if root.is_dir():
            for found in sorted(root.rglob(name)):
                return found
    raise FontNotFoundError(
        f"font {font_id!r} needs {name}, which is not installed under "
        f"{' or '.join(map(str, FONT_ROOTS))}: install the Debian package {spec.package} "
        f"(apt-get install {spec.package}, or `make fonts`)"
    )


@cache
def _drawable(font_id: str) -> frozenset[int]:
    """Code points the font maps to a glyph with an outline (an empty glyph is not ink)."""
    import logging

    from fontTools.ttLib import TTFont

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # odd header dates are harmless
    with TTFont(font_path(font_id), lazy=True) as font:
        cmap = font.getBestCmap()
        if "loca" not in font:
            # CFF outlines: trust the cmap; glyph_mask() still returns empty for a blank.
            return frozenset(cmap)
        # A TrueType glyph with no outline has a zero-length 'loca' entry; reading the
        # offsets is much faster than decompiling every glyph of a 20 MB font.
        loca = font["loca"]
        order = font.getReverseGlyphMap()
        return frozenset(c for c, name in cmap.items()
                         if loca[order[name] + 1] > loca[order[name]])


def coverage(font_id: str, chars: list[str] | tuple[str, ...]) -> list[str]:
    """The characters of ``chars`` the font draws, in the same order (no tofu, no blanks)."""
    drawable = _drawable(font_id)
    return [c for c in chars if ord(c) in drawable]


@lru_cache(maxsize=64)
def pil_font(font_id: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path(font_id)), size)


def crop_to_ink(mask: np.ndarray) -> np.ndarray:
    """Cut the fringe below :data:`INK_THRESHOLD` and crop to the ink's bounding box."""
    mask = np.where(mask >= INK_THRESHOLD, mask, 0).astype(np.uint8)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask[:0, :0]
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@lru_cache(maxsize=16384)
def glyph_mask(font_id: str, char: str, size: int, weight: int = 0) -> np.ndarray:
    """``char`` drawn at ``size`` px as a uint8 ink mask cropped to its ink (read-only).

    ``weight`` > 0 thickens strokes (a heavier brush) by that many 3x3 dilations.
    An empty array means the font drew nothing.
    """
    from PIL import Image, ImageDraw, ImageFilter

    font = pil_font(font_id, size)
    left, top, right, bottom = font.getbbox(char)
    pad = 2 + weight
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), char, font=font, fill=255)
    for _ in range(weight):
        canvas = canvas.filter(ImageFilter.MaxFilter(3))
    mask = crop_to_ink(np.asarray(canvas))
    mask.flags.writeable = False
    return mask
