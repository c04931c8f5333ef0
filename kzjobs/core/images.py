"""Decoding page images safely: bombs, truncation and odd modes give clear errors.

Pages come as archives make them: 16-bit masters, bilevel and grayscale scans, CMYK,
transparency, camera pages that are stored sideways with an EXIF orientation. Each is
brought to the 8-bit RGB page a person would see (:func:`to_rgb`).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

# A real page is ~3000x4500 px; 80 Mpx leaves room and stops decompression bombs.
DEFAULT_MAX_PIXELS = 80_000_000
# The source modes :func:`to_rgb` reads (Pillow's names). "F" (float) has no stated range.
READABLE_MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "La", "RGBa", "RGBX", "CMYK",
                  "YCbCr", "LAB", "HSV", "I", "I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is the short reason for the quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               frame: int = 0) -> Image.Image:
    """Decode ``data`` (its ``frame``-th image, for a multi-page TIFF) fully and return an
    RGB image, or raise :class:`ImageError`."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    with warnings.catch_warnings():
        # PIL warns past MAX_IMAGE_PIXELS and raises past twice that: check it ourselves.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            if frame:
                img.seek(frame)
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
        except EOFError:
            raise ImageError(f"no page {frame + 1} in the file") from None
        except Exception as exc:  # PIL raises many types for corrupt input
            raise ImageError(f"cannot decode image: {type(exc).__name__}: {exc}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """The page as 8-bit RGB: EXIF orientation applied, 16-bit scaled (not clipped),
    CMYK through its ICC profile when it has one, transparency laid on white paper."""
    if img.mode not in READABLE_MODES:
        raise ImageError(f"unsupported {img.mode} image")
    try:
        img = ImageOps.exif_transpose(img)
        if img.mode.startswith("I"):
            img = _eight_bit(img)
        if img.mode == "CMYK" and img.info.get("icc_profile"):
            return _cmyk_to_srgb(img)
        if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(paper, rgba).convert("RGB")
        return img.convert("RGB")
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"cannot convert {img.mode} image to RGB: {exc}") from None


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer holding 16-bit) gray to 8-bit by the full 16-bit range:
    Pillow's own convert clips every value over 255 to white."""
    import numpy as np

    values = np.asarray(img).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")


def _cmyk_to_srgb(img: Image.Image) -> Image.Image:
    """CMYK through the file's own ICC profile to sRGB (LittleCMS, in Pillow's wheels);
    a plain conversion ignores the profile and shifts every colour."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        return ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"),
                                         outputMode="RGB")
    except (ImageCms.PyCMSError, OSError):  # a broken profile: the plain conversion
        return img.convert("RGB")


def page_frames(img: Image.Image) -> list[int]:
    """The frame index of each page of ``img``: its frames, less reduced-resolution
    copies (thumbnails a scanner stores after a page: TIFF NewSubfileType bit 0)."""
    frames = []
    for index in range(getattr(img, "n_frames", 1)):
        img.seek(index)
        if not int(getattr(img, "tag_v2", {}).get(254, 0) or 0) & 1:
            frames.append(index)
    return frames


def image_format(data: bytes) -> str | None:
    """The decoder PIL would pick ("JPEG", "PNG"...), without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:
        return None
