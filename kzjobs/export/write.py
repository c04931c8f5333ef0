"""Write the chosen library formats of a recognised collection, at merge time.

Where each lands, under the output prefix:

- ``alto/<page>.xml``, ``page/<page>.xml``: ALTO v4 and PAGE XML, one per page;
- ``iiif/<page>.json``: the page's Web Annotation page (and ``iiif/<page>.list.json``,
  a Presentation 2 annotation list, for a page of a v2 manifest);
  ``iiif/<book>.manifest.json``: for a book read from a IIIF manifest, a copy of that
  manifest with each canvas linking its annotations;
- ``tei/<book>.xml``, ``pdf/<book>.pdf``: TEI and the searchable PDF, one per book.

Every file is rebuilt from ``pages/*.json`` on each merge, byte for byte the same for
the same pages, so shards stay simple and a merge after a crash needs no bookkeeping.
Pages are read one at a time, and each page image once, for the PDF; a book's TEI and
its PDF's compressed page images are what is held whole.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kzjobs.core.store import Store
from kzjobs.data.collection import manifest_key
from kzjobs.export import parse_formats
from kzjobs.export.common import book_order, text
from kzjobs.recognize.outputs import PageResult, page_key

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

IIIF = "iiif"



def output_keys(fmt: str, name: str) -> str:
    """The key of ``fmt``'s file for a page or book ``name``."""
    return {"alto": f"alto/{name}.xml", "page": f"page/{name}.xml", "tei": f"tei/{name}.xml",
            "iiif": f"{IIIF}/{name}.json", "pdf": f"pdf/{name}.pdf"}[fmt]


def base_url_of(out: Store) -> str:
    """The output prefix as a URI: what IIIF ids are made of when no public URL is given."""
    return out.uri if "://" in out.uri else Path(out.uri).resolve().as_uri()


def _url(base: str, key: str) -> str:
    return f"{base.rstrip('/')}/{quote(key)}"


def write_formats(out: Store, image_ids: Iterable[str], formats: str | Sequence[str],
                  *, base_url: str | None = None,
                  read_image: Callable[[str], Image.Image] | None = None) -> dict[str, Any]:
    """Write ``formats`` for the recognised pages ``image_ids`` in ``out``.

    ``base_url``: the public URL of ``out`` for IIIF ids (default: its own URI).
    ``read_image``: a page's image, for the PDF. Returns the files written per format,
    and the pages whose image could not be read again (their PDF page is text only).
    """
    formats = parse_formats(formats)
    if not formats:
        return {}
    base = (base_url or base_url_of(out)).rstrip("/")
    written = dict.fromkeys(formats, 0)
    books: dict[str, list[tuple[tuple[int, str], str]]] = {}
    chars: dict[str, set[str]] = {}

    def load(image_id: str) -> PageResult:
        return PageResult.from_json(out.read_json(page_key(image_id)))

    def put(fmt: str, name: str, data: bytes) -> None:
        out.write_bytes(output_keys(fmt, name), data)
        written[fmt] += 1

    for image_id in sorted(image_ids):
        page = load(image_id)
        books.setdefault(page.book, []).append((book_order(page), image_id))
        if "alto" in formats:
            from kzjobs.export.alto import alto_page

            put("alto", image_id, alto_page(page))
        if "page" in formats:
            from kzjobs.export.pagexml import page_xml

            put("page", image_id, page_xml(page))
        if IIIF in formats:
            from kzjobs.export.iiif import annotation_page

            url = _url(base, output_keys(IIIF, image_id))
            out.write_json(output_keys(IIIF, image_id), annotation_page(page, url, base))
            written[IIIF] += 1
        if "pdf" in formats:
            chars.setdefault(page.book, set()).update(text(c) for c in page.chars)

    unread: list[str] = []
    for book, entries in sorted(books.items()):
        ids = [image_id for _, image_id in sorted(entries)]

        def pages(ids: list[str] = ids) -> Iterator[PageResult]:
            return map(load, ids)

        if "tei" in formats:
            from kzjobs.export.tei import tei_book

            put("tei", book, tei_book(book, pages()))
        if IIIF in formats and out.exists(manifest_key(book)):
            written[IIIF] += _manifest_copy(out, book, pages(), base)
        if "pdf" in formats:
            from kzjobs.export.pdf import searchable_pdf

            # Through a file: while the PDF is written, only its (JPEG) page images are
            # in memory, and only the finished bytes once it is closed.
            with tempfile.TemporaryFile() as tmp:
                searchable_pdf(((p, _image(p, read_image, unread)) for p in pages()),
                               chars.get(book, ()), tmp)
                tmp.seek(0)
                put("pdf", book, tmp.read())
    return {"files": written, **({"pdf_pages_without_image": unread} if unread else {})}


def _image(page: PageResult, read_image: Callable[[str], Image.Image] | None,
           unread: list[str]) -> Image.Image | None:
    """The page's image again; None (logged, listed) when it cannot be read now."""
    from kzjobs.core.images import ImageError

    try:
        if read_image is None:
            raise KeyError("no collection to read images from")
        return read_image(page.image_id)
    except (ImageError, KeyError, OSError) as exc:
        log.warning("pdf: page %s without its image: %s", page.image_id, exc)
        unread.append(page.image_id)
        return None


def _manifest_copy(out: Store, book: str, pages: Iterable[PageResult], base: str) -> int:
    """Write the copy of the book's manifest linking its canvases' annotations (and, for a
    v2 manifest, the annotation lists it links); returns the number of files written."""
    from kzjobs.export.iiif import annotation_list, linked_manifest, manifest_version

    manifest = out.read_json(manifest_key(book))
    v2 = manifest_version(manifest) == 2
    links: dict[str, str] = {}
    files = 0
    for page in pages:
        if not (canvas := page.source.get("canvas")):
            continue
        if v2:
            key = f"{IIIF}/{page.image_id}.list.json"
            out.write_json(key, annotation_list(page, _url(base, key)))
            files += 1
        else:
            key = output_keys(IIIF, page.image_id)
        links[str(canvas)] = _url(base, key)
    key = f"{IIIF}/{book}.manifest.json"
    out.write_json(key, linked_manifest(manifest, _url(base, key), links.get))
    return files + 1
