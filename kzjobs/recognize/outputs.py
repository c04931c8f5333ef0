"""What recognition writes for each page, and the merged outputs of a collection.

Per page (the unit of resumable work, written last and atomically):
``pages/<id>.json``, plus ``transcripts/<id>.txt`` and ``review/<id>.html``.
For the collection: ``submission.csv`` and ``review/index.html``, rebuilt by merging.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from kzjobs.data.books import book_id
from kzjobs.data.format import Box, Point, code_to_char, write_submission
from kzjobs.recognize.reading_order import columns
from kzjobs.store import Store

PAGES, TRANSCRIPTS, REVIEW = "pages", "transcripts", "review"


@dataclass(frozen=True)
class Char:
    code: str
    x: int
    y: int
    w: int
    h: int
    confidence: float

    @property
    def box(self) -> Box:
        return Box(self.code, self.x, self.y, self.w, self.h)


@dataclass
class PageResult:
    image_id: str
    width: int
    height: int
    chars: list[Char] = field(default_factory=list)
    # Where the page came from, when its id alone does not say: ``book`` (the PDF, TIFF
    # or manifest it is a page of), the original file ``name``, its 1-based ``page`` in
    # that file, and for IIIF the ``canvas`` and ``manifest`` ids. Empty for plain pages.
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def book(self) -> str:
        return self.source.get("book") or book_id(self.image_id)

    def in_reading_order(self) -> list[list[Char]]:
        cols = columns([c.box for c in self.chars])
        return [[self.chars[i] for i in col] for col in cols]

    def to_json(self) -> dict:
        """Characters in reading order, each with its column and place in it."""
        chars = []
        for col_no, col in enumerate(self.in_reading_order()):
            for row_no, c in enumerate(col):
                chars.append(
                    asdict(c)
                    | {"char": code_to_char(c.code), "column": col_no, "index": row_no}
                )
        return {"image_id": self.image_id, "width": self.width, "height": self.height,
                **({"source": self.source} if self.source else {}), "characters": chars}

    @classmethod
    def from_json(cls, data: Mapping) -> PageResult:
        chars = [
            Char(c["code"], c["x"], c["y"], c["w"], c["h"], c["confidence"])
            for c in data["characters"]
        ]
        return cls(data["image_id"], data["width"], data["height"], chars,
                   dict(data.get("source", {})))

    def transcript(self) -> str:
        """One line per column, right to left; each line reads top to bottom."""
        return "".join(
            "".join(code_to_char(c.code) for c in col) + "\n" for col in self.in_reading_order()
        )

    def points(self) -> list[Point]:
        """Box centres in reading order (submission rows)."""
        return [Point(c.code, c.x + c.w / 2, c.y + c.h / 2)
                for col in self.in_reading_order() for c in col]


def page_key(image_id: str) -> str:
    return f"{PAGES}/{image_id}.json"


def write_page(store: Store, result: PageResult, image: Image.Image) -> None:
    """Write one page's outputs; the JSON goes last, so its presence means 'done'."""
    store.write_text(f"{TRANSCRIPTS}/{result.image_id}.txt", result.transcript())
    store.write_text(f"{REVIEW}/{result.image_id}.html", review_page(result, image))
    store.write_json(page_key(result.image_id), result.to_json())


def done_pages(store: Store) -> set[str]:
    return {k[len(PAGES) + 1 : -len(".json")] for k in store.list(PAGES) if k.endswith(".json")}


def merge(store: Store, image_ids: Iterable[str], order: Sequence[str] | None = None) -> dict:
    """Build ``submission.csv`` and the review index from the per-page results.

    Rows are the pages sorted by id, or exactly ``order``'s ids in its order (the
    competition's sample submission: an id with no result gets no characters). Pages are
    read one at a time and only their submission rows kept, so the merge of a large
    collection holds text, not every page's parsed characters.
    """
    counts: dict[str, int] = {}
    recognized = set(image_ids)

    def rows() -> Iterator[tuple[str, list[Point]]]:
        for image_id in order if order is not None else sorted(recognized):
            if image_id not in recognized:
                yield image_id, []
                continue
            page = PageResult.from_json(store.read_json(page_key(image_id)))
            counts[image_id] = len(page.chars)
            yield image_id, page.points()

    store.write_bytes("submission.csv", write_submission(rows()))
    store.write_text(f"{REVIEW}/index.html", review_index(counts))
    return {"pages": len(counts), "characters": sum(counts.values())}


_PAGE_STYLE = """
body{font-family:sans-serif;margin:0;display:flex;gap:1em}
.page{position:relative;flex:none}
.page img{display:block;height:95vh}
.page svg{position:absolute;left:0;top:0;width:100%;height:100%}
rect{fill:none;stroke:#d11;stroke-width:.25%}
rect.low{stroke:#f90}
text{fill:#05c;font-weight:bold}
pre{font-size:1.4em;writing-mode:vertical-rl;line-height:1.6}
"""


def _thumbnail_data_uri(image: Image.Image, height: int = 1400) -> str:
    """A JPEG data URI, so the review page is self-contained on any store (S3 too)."""
    scale = min(1.0, height / image.height)
    thumb = image.convert("RGB").resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    )
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def review_page(result: PageResult, image: Image.Image, low_confidence: float = 0.5) -> str:
    """HTML a person can open: the page with each box and its character, and the transcript."""
    w, h = result.width, result.height
    font = max(12, round(0.012 * h))
    marks = []
    for c in result.chars:
        cls = ' class="low"' if c.confidence < low_confidence else ""
        title = html.escape(f"{c.code} {code_to_char(c.code)} {c.confidence:.2f}")
        marks.append(
            f'<g><title>{title}</title><rect{cls} x="{c.x}" y="{c.y}" width="{c.w}" '
            f'height="{c.h}"/><text x="{c.x + c.w + 2}" y="{c.y + font}" '
            f'font-size="{font}">{html.escape(code_to_char(c.code))}</text></g>'
        )
    name = html.escape(result.image_id)
    return (
        f'<!doctype html><html lang="ja"><head><meta charset="utf-8"><title>{name}</title>'
        f"<style>{_PAGE_STYLE}</style></head><body>"
        f'<div class="page"><img src="{_thumbnail_data_uri(image)}" alt="{name}">'
        f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none">{"".join(marks)}</svg></div>'
        f"<div><h1>{name}</h1><p>{len(result.chars)} characters</p>"
        f"<pre>{html.escape(result.transcript())}</pre></div></body></html>"
    )


def review_index(pages: Mapping[str, int]) -> str:
    """The review pages' index: each page id with its number of characters."""
    rows = "".join(
        f'<li><a href="{html.escape(image_id)}.html">{html.escape(image_id)}</a> '
        f"({count} characters)</li>"
        for image_id, count in pages.items()
    )
    return (
        '<!doctype html><html lang="ja"><head><meta charset="utf-8"><title>Review</title>'
        f"</head><body><h1>{len(pages)} pages</h1><ul>{rows}</ul></body></html>"
    )
