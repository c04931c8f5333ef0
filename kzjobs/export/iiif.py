"""IIIF: a W3C Web Annotation page per page (canvas), and a copy of a source manifest
with those pages linked.

One annotation per character, not per column: each character has its own box and
confidence, which a viewer shows over the scan and a reviewer corrects one by one; the
annotations come in reading order, so their bodies joined give the transcript.
Motivation ``supplementing`` (IIIF Presentation 3: text transcribed from the canvas).

Plain dicts, not iiif-prezi3: its pinned Pillow conflicts with the project's, and the
v2 manifest copy (``otherContent``) is outside its model anyway.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kzjobs.export.common import text

if TYPE_CHECKING:
    from kzjobs.recognize.outputs import Char, PageResult

CONTEXT_V3 = "http://iiif.io/api/presentation/3/context.json"
CONTEXT_V2 = "http://iiif.io/api/presentation/2/context.json"


def canvas_id(page: PageResult, base: str) -> str:
    """The canvas the page's annotations target: the manifest's own canvas, or one
    named after the page under ``base`` for a page that came from a plain file."""
    return str(page.source.get("canvas") or f"{base}/canvas/{quote(page.image_id)}")


def xywh(page: PageResult, c: Char) -> str:
    """A character's box as a canvas fragment: in the canvas's own coordinates, which
    differ from the image's pixels when the image server sent a smaller rendition."""
    width, height = page.source.get("canvas_size") or (page.width, page.height)
    sx, sy = width / page.width, height / page.height
    return f"xywh={round(c.x * sx)},{round(c.y * sy)},{round(c.w * sx)},{round(c.h * sy)}"


def annotation_page(page: PageResult, page_url: str, base: str) -> dict[str, Any]:
    """The page's characters as an AnnotationPage (IIIF Presentation 3 JSON-LD)."""
    target = canvas_id(page, base)
    items = []
    for k, col in enumerate(page.in_reading_order(), 1):
        for j, c in enumerate(col, 1):
            items.append({
                "id": f"{page_url}#c{k}g{j}",
                "type": "Annotation",
                "motivation": "supplementing",
                "body": {"type": "TextualBody", "value": text(c), "format": "text/plain",
                         "language": "ja"},
                "target": f"{target}#{xywh(page, c)}",
            })
    return {"@context": CONTEXT_V3, "id": page_url, "type": "AnnotationPage", "items": items}


def annotation_list(page: PageResult, list_url: str) -> dict[str, Any]:
    """The same characters as a Presentation 2 AnnotationList, which is what a v2
    manifest's ``otherContent`` links (a v2 viewer reads no W3C AnnotationPage)."""
    target = canvas_id(page, "")
    resources = [
        {"@id": f"{list_url}#c{k}g{j}", "@type": "oa:Annotation",
         "motivation": "sc:painting",
         "resource": {"@type": "cnt:ContentAsText", "format": "text/plain", "chars": text(c),
                      "language": "ja"},
         "on": f"{target}#{xywh(page, c)}"}
        for k, col in enumerate(page.in_reading_order(), 1)
        for j, c in enumerate(col, 1)
    ]
    return {"@context": CONTEXT_V2, "@id": list_url, "@type": "sc:AnnotationList",
            "resources": resources}


def manifest_version(manifest: Mapping[str, Any]) -> int:
    contexts = manifest.get("@context")
    contexts = contexts if isinstance(contexts, list) else [contexts]
    return 3 if CONTEXT_V3 in contexts else 2


def linked_manifest(manifest: Mapping[str, Any], url: str,
                    linked: Callable[[str], str | None]) -> dict[str, Any]:
    """A copy of ``manifest``, now at ``url``, whose canvases link their annotations.

    ``linked(canvas_id)`` is the URL of the canvas's annotation page (v3) or list (v2),
    None for a canvas that was not recognised. Links already there are kept; a link to
    the same URL is not added twice, so copying a copy changes nothing.
    """
    out = copy.deepcopy(dict(manifest))
    if manifest_version(out) == 3:
        out["id"] = url
        for canvas in out.get("items", []):
            if (ref := linked(canvas.get("id", ""))) is not None:
                pages = canvas.setdefault("annotations", [])
                if all(p.get("id") != ref for p in pages):
                    pages.append({"id": ref, "type": "AnnotationPage"})
        return out
    out["@id"] = url
    for sequence in out.get("sequences", []):
        for canvas in sequence.get("canvases", []):
            if (ref := linked(canvas.get("@id", ""))) is not None:
                lists = canvas.setdefault("otherContent", [])
                if all(p.get("@id") != ref for p in lists):
                    lists.append({"@id": ref, "@type": "sc:AnnotationList"})
    return out
