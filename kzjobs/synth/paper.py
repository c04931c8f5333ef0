"""Paint a laid-out page: paper texture, fibres and stains, show-through, ink with
uneven density and scanner blur, red seals, then JPEG.

Everything is numpy on float32 layers, with low-frequency fields made small and
resized by PIL (cheap smooth noise); no per-pixel Python.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from kzjobs.synth.render import PageLayout, ink_layer
from kzjobs.synth.style import BookStyle

# Low-frequency fields are made at 1/BLOCK of the page size and blown up by repeating
# pixels: at these scales the blocks do not show, and it is several times cheaper than
# resampling (PIL or scipy) at full size.
BLOCK = 4


def _blow_up(small: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.repeat(np.repeat(small, BLOCK, axis=0), BLOCK, axis=1)[:height, :width]


def _small_shape(height: int, width: int) -> tuple[int, int]:
    return -(-height // BLOCK), -(-width // BLOCK)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Roughly N(0, 1) noise of shape (height, width), varying over about ``cells`` cells
    across the longer side (bilinear from a coarse grid)."""
    step = max(height, width) / cells
    coarse = rng.standard_normal((int(height / step) + 2, int(width / step) + 2))
    img = Image.fromarray(coarse.astype(np.float32))
    return np.asarray(img.resize((width, height), Image.BILINEAR))


def _stains(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """Water stains (a pale body and a darker tide line) and foxing spots, 0..1."""
    h, w = height, width
    field = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.03, 0.18) * w, rng.uniform(0.03, 0.18) * w
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        d *= 1 + 0.15 * smooth_noise(rng, h, w, 12)  # ragged outline
        body = np.clip(1 - d, 0, 1) * rng.uniform(0.2, 0.6)
        tide = np.exp(-(((d - 1) / 0.04) ** 2)) * rng.uniform(0.3, 0.8)  # the darker rim
        field = np.maximum(field, body + tide)
    for _ in range(int(rng.poisson(6 * count + 2))):  # foxing: small brown spots
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.6, 2.5)
        y0, y1 = int(max(0, cy - 3 * r)), int(min(h, cy + 3 * r + 1))
        x0, x1 = int(max(0, cx - 3 * r)), int(min(w, cx + 3 * r + 1))
        spot = np.exp(-(((yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2) / r**2))
        np.maximum(field[y0:y1, x0:x1], spot * rng.uniform(0.3, 0.9), out=field[y0:y1, x0:x1])
    return np.clip(field, 0, 1)


def _fibres(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Paper fibres: faint short strokes, as a 0..1 layer."""
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    n = int(height * width / 12000)
    xs, ys = rng.uniform(0, width, n), rng.uniform(0, height, n)
    lengths, angles = rng.uniform(8, 45, n), rng.uniform(0, np.pi, n)
    tones = rng.integers(40, 140, n)
    for x, y, length, angle, tone in zip(xs, ys, lengths, angles, tones, strict=True):
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        draw.line((x, y, x + dx, y + dy), fill=int(tone), width=1)
    return np.asarray(img, np.float32) / 255.0


def _soften(layer: np.ndarray, blur: float) -> np.ndarray:
    """Scanner blur of a uint8 layer: down- and up-sampling by a factor set by ``blur``.

    Resampling twice costs a fraction of a Gaussian on the full page and looks the same
    at these radii (0.2-1.5 px); it runs on the one-channel ink layer only.
    """
    if blur <= 0.05:
        return layer
    h, w = layer.shape
    scale = 1 / (1 + 0.7 * blur)
    img = Image.fromarray(layer).resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    return np.asarray(img.resize((w, h), Image.BILINEAR))


def paint(page: PageLayout, style: BookStyle, rng: np.random.Generator, *,
          clean: bool = False) -> np.ndarray:
    """The page as an RGB uint8 array. ``clean`` paints flat paper and solid ink with no
    texture, ink variation or blur (for checking boxes against ink)."""
    h, w = page.height, page.width
    sh, sw = _small_shape(h, w)
    ink_u8 = ink_layer(page, page.chars + page.extras, lines=True)
    red = np.array([rng.uniform(175, 215), rng.uniform(25, 60), rng.uniform(30, 65)],
                   np.float32)
    blur = 0.0
    grain = stain = None
    if clean:
        tone = np.ones((h, w), np.float32)  # multiplies the paper colour
        alpha = ink_u8 * np.float32(1 / 255)
    else:
        blur = style.blur * rng.uniform(0.8, 1.2)
        # Paper: uneven tone, darker towards the edges, show-through, stains (all low
        # frequency, made small), then fibres and grain at full size.
        small = 1 + 0.025 * smooth_noise(rng, sh, sw, 10)
        edge = np.minimum(np.arange(sw), np.arange(sw)[::-1]) / (0.04 * sw)
        small *= (0.93 + 0.07 * np.clip(edge, 0, 1)).astype(np.float32)[None, :]
        if style.bleed:
            # Show-through of the other side: this page's ink, mirrored and blurred.
            back = Image.fromarray(np.ascontiguousarray(ink_u8[:, ::-1]))
            back = back.reduce(BLOCK * 2).resize((sw, sh), Image.BILINEAR)
            small *= 1 - np.asarray(back, np.float32) * (style.bleed / 255)
        count = int(rng.poisson(style.stains))
        if count:
            stain = _blow_up(_stains(rng, sh, sw, count), h, w)
        tone = _blow_up(small, h, w)
        tone -= 0.06 * _fibres(rng, h, w)
        half = rng.standard_normal(((h + 1) // 2, (w + 1) // 2), np.float32) * style.grain
        grain = np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)[:h, :w]
        ink_u8 = _soften(ink_u8, blur)
        # Uneven ink: the brush loads and runs dry.
        density = np.clip(0.9 + 0.08 * smooth_noise(rng, sh, sw, 16), 0.7, 1.0) * (1 / 255)
        alpha = ink_u8 * _blow_up(density.astype(np.float32), h, w)
    keep = 1 - alpha
    base = tone * keep  # the paper, where the ink lets it show
    paper_grain = grain * keep if grain is not None else None
    out = np.empty((h, w, 3), np.uint8)
    tint = (0.12, 0.22, 0.38)  # stains are brown: blue fades most
    # Channel by channel on 2-D layers: fewer full-page temporaries than (h, w, 3) maths.
    for c in range(3):
        ch = base * np.float32(style.paper[c])
        if stain is not None:
            ch *= 1 - stain * np.float32(tint[c])
        if paper_grain is not None:
            ch += paper_grain
        ch += alpha * np.float32(style.ink[c])
        np.clip(ch, 0, 255, out=ch)
        out[..., c] = ch
    # Seals go over paper and ink, painted only where each seal is.
    for seal in page.seals:
        mask = seal.mask if clean else _soften(seal.mask, blur)
        region = out[seal.y : seal.y + seal.h, seal.x : seal.x + seal.w]
        pixels = region.astype(np.float32)
        pixels += (red - pixels) * (mask * np.float32(0.9 / 255))[..., None]
        region[:] = np.clip(pixels, 0, 255)
    return out


def to_jpeg(pixels: np.ndarray, style: BookStyle, *, comment: str = "") -> bytes:
    """JPEG bytes at the book's quality (deterministic: same pixels, same bytes)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=style.jpeg_quality,
                                 comment=comment.encode())
    return buf.getvalue()
