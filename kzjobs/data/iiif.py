"""IIIF Presentation 2 and 3 manifests: each canvas and the image to fetch for it.

Parsed by hand over the JSON (a few fields of two versions), not with a IIIF library:
the maintained ones (iiif-prezi3) build version-3 manifests, and reading needs only
canvas ids, sizes and image services, with a clear reason when one is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class ManifestError(ValueError):
    """Not a usable IIIF manifest; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Canvas:
    id: str
    width: int | None
    height: int | None
    image: str  # the URL to fetch: an Image API request, or the image itself
    error: str | None = None  # why this canvas cannot be read (the others still can)


@dataclass(frozen=True)
class Manifest:
    id: str
    version: int
    canvases: list[Canvas]


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _ident(obj: Any) -> str | None:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        value = obj.get("id", obj.get("@id"))
        return value if isinstance(value, str) else None
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _contexts(obj: dict) -> str:
    context = obj.get("@context", "")
    return " ".join(c for c in (context if isinstance(context, list) else [context])
                    if isinstance(c, str))


def image_request(service: dict, width: int | None, height: int | None, max_size: int) -> str:
    """The Image API URL of the whole image, its longest side at most ``max_size``
    (``w,`` / ``,h`` sizes are Image API level 1, which every image server offers)."""
    base = _ident(service)
    if not base:
        raise ManifestError("an image service without an id")
    kind = str(service.get("type", service.get("@type", ""))) + _contexts(service)
    version3 = "ImageService3" in kind or "image/3" in kind
    if width and height and max(width, height) > max_size:
        size = f"{max_size}," if width >= height else f",{max_size}"
    else:
        size = "max" if version3 else "full"
    return f"{base.rstrip('/')}/full/{size}/0/default.jpg"


def _image_of(body: Any, max_size: int) -> tuple[str, int | None, int | None]:
    if isinstance(body, dict) and body.get("type", body.get("@type")) in ("Choice",
                                                                          "oa:Choice"):
        body = body.get("default") or _first(body.get("items"))
    if not isinstance(body, dict):
        raise ManifestError("a canvas with no image")
    width, height = _int(body.get("width")), _int(body.get("height"))
    service = _first(body.get("service"))
    if isinstance(service, dict):
        return image_request(service, width, height, max_size), width, height
    url = _ident(body)
    if not url:
        raise ManifestError("a canvas image with no id and no image service")
    return url, width, height


def _canvas(canvas: Any, version: int, max_size: int) -> Canvas:
    if not isinstance(canvas, dict) or not _ident(canvas):
        raise ManifestError("a canvas without an id")
    if version == 3:
        page = _first(canvas.get("items"))
        annotation = _first(page.get("items")) if isinstance(page, dict) else None
        body = annotation.get("body") if isinstance(annotation, dict) else None
    else:
        image = _first(canvas.get("images"))
        body = image.get("resource") if isinstance(image, dict) else None
    url, width, height = _image_of(_first(body) if version == 3 else body, max_size)
    return Canvas(_ident(canvas) or "", _int(canvas.get("width")) or width,
                  _int(canvas.get("height")) or height, url)


def parse_manifest(data: bytes, *, max_size: int) -> Manifest:
    """The canvases of a version 2 or 3 manifest, in order, or :class:`ManifestError`."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError("not a IIIF manifest: not a JSON object")
    kind = doc.get("type", doc.get("@type"))
    if kind not in ("Manifest", "sc:Manifest"):
        raise ManifestError(f"not a IIIF manifest: type {kind!r}")
    context = _contexts(doc)
    version = 3 if ("presentation/3" in context or kind == "Manifest") else 2
    if version == 3:
        canvases = doc.get("items")
    else:
        sequence = _first(doc.get("sequences"))
        canvases = sequence.get("canvases") if isinstance(sequence, dict) else None
    if not isinstance(canvases, list) or not canvases:
        raise ManifestError("a manifest with no canvases")
    ident = _ident(doc) or ""
    parsed = []
    for canvas in canvases:
        try:
            parsed.append(_canvas(canvas, version, max_size))
        except ManifestError as exc:
            parsed.append(Canvas(_ident(canvas) or "", None, None, "", exc.reason))
    return Manifest(ident, version, parsed)
