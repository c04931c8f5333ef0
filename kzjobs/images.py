"""Decoding page images safely: bombs, truncation and odd modes give clear errors."""

from __future__ import annotations

import io
import warnings

from PIL import Image

# A real page is ~3000x4500 px; 80 Mpx leaves room and stops decompression bombs.
DEFAULT_MAX_PIXELS = 80_000_000


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is the short reason for the quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` fully and return an RGB image, or raise :class:`ImageError`."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    with warnings.catch_warnings():
        # PIL warns past MAX_IMAGE_PIXELS and raises past twice that: check it ourselves.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image too large: {width}x{height} px is over {max_pixels:,} pixels"
                )
            img.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"decompression bomb: {exc}") from None
        except Exception as exc:  # PIL raises many types for corrupt input
            raise ImageError(f"cannot decode image: {type(exc).__name__}: {exc}") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        raise ImageError(f"unsupported {img.mode} (16/32-bit) image")
    try:
        return img.convert("RGB")
    except Exception as exc:
        raise ImageError(f"cannot convert {img.mode} image to RGB: {exc}") from None


def image_format(data: bytes) -> str | None:
    """The decoder PIL would pick ("JPEG", "PNG"...), without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:
        return None
