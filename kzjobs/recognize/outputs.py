"""What recognition writes for each page, and the merged outputs of a collection.

Per page (the unit of resumable work, written last and atomically):
``pages/<id>.json``, plus ``transcripts/<id>.txt`` and ``review/<id>.html``.
For the collection: ``submission.csv``, ``review/index.html`` and each book's page order
(``review/books/*.js``), built by merging and written once (``Store.write_once``): a merge
never overwrites a published output. The review HTML is :mod:`.review`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from kzjobs.core.store import Store
from kzjobs.data.books import book_id
from kzjobs.data.format import Box, Point, code_to_char, write_submission
from kzjobs.recognize.reading_order import columns
from kzjobs.recognize.review import PageSummary, book_scripts, review_index, review_page

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


def _low_confidence(value: float | None) -> float:
    if value is not None:
        return value
    from kzjobs.core.settings import get_settings

    return get_settings().review_low_confidence


def write_page(store: Store, result: PageResult, image: Image.Image, *,
               low_confidence: float | None = None) -> None:
    """Write one page's outputs; the JSON goes last, so its presence means 'done'.

    ``low_confidence``: the review page's highlight threshold (default: the setting)."""
    store.write_text(f"{TRANSCRIPTS}/{result.image_id}.txt", result.transcript())
    store.write_text(f"{REVIEW}/{result.image_id}.html",
                     review_page(result, image, _low_confidence(low_confidence)))
    store.write_json(page_key(result.image_id), result.to_json())


def done_pages(store: Store) -> set[str]:
    return {k[len(PAGES) + 1 : -len(".json")] for k in store.list(PAGES) if k.endswith(".json")}


def merge(store: Store, image_ids: Iterable[str], *, order: Sequence[str] | None = None,
          low_confidence: float | None = None) -> dict:
    """Build ``submission.csv``, the review index and each book's page order (the review
    pages' previous/next links) from the per-page results.

    Rows are the pages sorted by id, or exactly ``order``'s ids in its order (the
    competition's sample submission: an id with no result gets no characters). Pages are
    read one at a time and only their submission rows and counts kept, so the merge of a
    large collection holds text, not every page's parsed characters.
    """
    low = _low_confidence(low_confidence)
    summaries: list[PageSummary] = []
    recognized = set(image_ids)

    def rows() -> Iterator[tuple[str, list[Point]]]:
        for image_id in order if order is not None else sorted(recognized):
            if image_id not in recognized:
                yield image_id, []
                continue
            page = PageResult.from_json(store.read_json(page_key(image_id)))
            summaries.append(PageSummary.of(page, low))
            yield image_id, page.points()

    store.write_once("submission.csv", write_submission(rows()))
    for path, script in book_scripts(summaries).items():
        store.write_once(f"{REVIEW}/{path}", script.encode("utf-8"))
    store.write_once(f"{REVIEW}/index.html", review_index(summaries, low).encode("utf-8"))
    return {"pages": len(summaries), "characters": sum(p.characters for p in summaries)}
