"""A collection's pages, from every kind of file a library has, each file accounted for.

The one place that turns a collection into pages (:class:`PageRef`) and reads them;
training datasets, validation and recognition all go through it.

- Page images: JPEG, PNG, WebP, JPEG 2000 and TIFF (each page of a multi-page TIFF).
- PDFs, rasterised one page at a time at ``KZ_PDF_DPI`` with PDFium (pypdfium2).
- IIIF Presentation 2/3 manifests: a ``*.json`` file in the collection, or a manifest
  URL as the collection; each canvas is fetched through the IIIF Image API
  (:mod:`kzjobs.core.fetch` guards the hosts).

The book of a page is its PDF, multi-page TIFF or manifest; a single page image is in
the book its id names (:func:`kzjobs.data.books.book_id`). Page ids come from the file
name (NFC, spaces and punctuation made ``_``; path characters refused) and, for a
multi-page source, the page number: ``<name>_p0001``.

Every file is read, or refused with its reason (:class:`Rejected`): unsupported types,
unsafe names, symbolic links out of the collection (never opened), broken or encrypted
PDFs, PDFs over ``KZ_PDF_MAX_PAGES``, manifests that cannot be read, two files that give
one id. System clutter (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, AppleDouble
``._*`` files) and, in a plain folder, files in its subfolders are not pages: they are
counted in ``ignored``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import unicodedata
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from kzjobs.core.images import DEFAULT_MAX_PIXELS, ImageError, open_image, page_frames
from kzjobs.core.quarantine import Quarantined
from kzjobs.core.store import Store, UnsafeKeyError, key_name

if TYPE_CHECKING:
    from PIL import Image

    from kzjobs.core.fetch import Fetcher
    from kzjobs.core.settings import Settings

IMAGE_DIRS = ("images", "train_images", "test_images")
# What each suffix promises. WebP is accepted: Pillow reads it and scanners' web exports
# use it; a GIF (animations, 256 colours) is no scan.
IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF",
                 ".tiff": "TIFF", ".jp2": "JPEG2000", ".j2k": "JPEG2000",
                 ".jpx": "JPEG2000", ".webp": "WEBP"}
PDF, MANIFEST = ".pdf", ".json"
SUFFIX_FORMATS = IMAGE_FORMATS | {PDF: "PDF", MANIFEST: "IIIF"}
SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "ehthumbs.db",
                          ".localized", "Icon\r"})
# A collection's own files at its root, beside its page folders.
METADATA = frozenset({"train.csv", "unicode_translation.csv", "sample_submission.csv"})
SAMPLE_SUBMISSION = "sample_submission.csv"
# Path separators (a Windows drive's ':' too) and control characters: such a name is
# refused, not rewritten, since it is a path trick more often than a scanner's name.
_REFUSED = re.compile(r"[\\/:\x00-\x1f\x7f]")
_NOT_ID = re.compile(r"[^\w.-]+")  # \w is Unicode: kana, kanji, letters, digits, _
_MAX_ID_BYTES = 180  # ``<id>.json`` and friends must fit a 255-byte file name
PASSWORD_ERROR = 4  # PDFium's FPDF_ERR_PASSWORD
_PDFIUM = threading.Lock()  # PDFium is not thread-safe: one call at a time per process
STAGE = "read"  # the stage a file refused here is quarantined by


class UnsafeName(ValueError):
    """A file name that cannot become a page id."""


def page_id(stem: str) -> str:
    """A safe, stable id for a file stem: NFC-normalised, runs of spaces and punctuation
    made ``_``, starting with a letter or digit; a name with a path separator, a ':' or a
    control character is refused. Usable as one part of a store key."""
    name = unicodedata.normalize("NFC", stem)
    if _REFUSED.search(name):
        raise UnsafeName(f"unsafe file name {stem!r}: path or control characters")
    ident = _NOT_ID.sub("_", name).strip("_")
    if not ident[:1].isalnum():  # '-x' reads as an option, '.x' is hidden, '' is nothing
        raise UnsafeName(f"unsafe file name {stem!r}: it does not start with a letter or "
                         "digit")
    if len(ident.encode("utf-8")) > _MAX_ID_BYTES or len(ident) > 100:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
        while len(ident.encode("utf-8")) > _MAX_ID_BYTES - 11 or len(ident) > 89:
            ident = ident[:-1]
        ident = f"{ident.rstrip('._-')}-{digest}"
    return ident


def page_of(base: str, page: int) -> str:
    return f"{base}_p{page:04d}"


def split_name(name: str) -> tuple[str, str]:
    """``a_001.JPG`` -> (``a_001``, ``.jpg``)."""
    stem, dot, suffix = name.rpartition(".")
    return (stem, f".{suffix.lower()}") if dot and stem else (name, "")


@dataclass(frozen=True)
class PageRef:
    """One page: its id, where it comes from, and the book it belongs to."""

    id: str
    key: str  # the collection file it comes from (a store key), or the manifest URL
    name: str  # the file's own name, as found
    format: str  # what the file is: JPEG, PNG, TIFF, JPEG2000, WEBP, PDF or IIIF
    book: str | None = None  # the PDF, multi-page TIFF or manifest it is a page of
    page: int | None = None  # 1-based, in its PDF, TIFF or manifest
    index: int = 0  # 0-based frame of a TIFF, page of a PDF
    canvas: str | None = None
    manifest: str | None = None
    image: str | None = None  # IIIF: the image URL of the canvas
    canvas_size: tuple[int, int] | None = None

    @property
    def suffix(self) -> str:
        return split_name(self.name)[1]

    def source(self) -> dict[str, Any]:
        """What a page result keeps of it (:attr:`PageResult.source`)."""
        found = {"book": self.book, "name": self.name, "page": self.page,
                 "canvas": self.canvas, "manifest": self.manifest,
                 "canvas_size": list(self.canvas_size) if self.canvas_size else None}
        return {k: v for k, v in found.items() if v is not None}


class Rejected(Quarantined):
    """A file (or a page of it, or an id) that is not read, and why."""

    def __init__(self, item: str, key: str, reason: str) -> None:
        # item: the page id it would have had, else the file's name
        super().__init__(item=item, key=key, reason=reason, stage=STAGE)


@dataclass
class Scan:
    pages: list[PageRef]
    rejected: list[Rejected]
    ignored: dict[str, int] = field(default_factory=dict)  # what is not a page, counted
    manifests: dict[str, bytes] = field(default_factory=dict)  # book -> manifest as read
    order: list[str] | None = None  # the ids a submission lists, in order (competition)

    @cached_property
    def by_id(self) -> dict[str, PageRef]:
        return {p.id: p for p in self.pages}


def manifest_key(book: str) -> str:
    """Where the recognition outputs keep a copy of a book's manifest, as read."""
    return f"sources/{book}.manifest.json"


def _url_book(url: str) -> str:
    """A book id for a manifest URL: its last path part that is not 'manifest'."""
    parts = [unquote(p) for p in urlsplit(url).path.split("/") if p]
    names = [split_name(p)[0] if p.lower().endswith(".json") else p for p in parts]
    named = [n for n in names if n.lower() not in ("manifest", "iiif", "presentation")]
    try:
        return page_id(named[-1] if named else urlsplit(url).hostname or "manifest")
    except UnsafeName:
        return "manifest-" + hashlib.sha256(url.encode()).hexdigest()[:10]


def is_url(ref: str) -> bool:
    return ref.startswith(("https://", "http://"))


class Collection:
    """The pages of a store's page folders (``folders``; ``""`` is the store's own files)
    and of manifest URLs."""

    def __init__(self, store: Store | None, folders: tuple[str, ...] = IMAGE_DIRS, *,
                 manifests: tuple[str, ...] = (), order_from: str | None = None,
                 only: str | None = None,
                 settings: Settings | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        from kzjobs.core.settings import get_settings

        self.store = store
        self.folders = folders
        self.manifest_urls = manifests
        self.order_from = order_from
        self.only = only  # one file of the folder (``--images book.pdf``)
        self.settings = settings or get_settings()
        self.max_pixels = max_pixels
        self._pdf: tuple[str, Any] | None = None
        self._last: tuple[str, bytes] | None = None  # the last multi-page file read

    @property
    def uri(self) -> str:
        return self.store.uri if self.store else " ".join(self.manifest_urls)

    @classmethod
    def open(cls, ref: str, store: Store | None = None, **kwargs: Any) -> Collection:
        """The pages a recognition run reads from ``ref``: a store key, a folder or
        ``s3://`` URI (see :meth:`of`), or a IIIF manifest URL."""
        if is_url(ref):
            return cls(None, (), manifests=(ref,), **kwargs)
        from kzjobs.core.store import open_store

        own = "://" in ref or ref.startswith(("/", ".", "~")) or store is None
        if own and "://" not in ref and Path(ref).expanduser().is_file():
            return cls.folder(ref, **kwargs)
        return cls.of(open_store(ref) if own else store.child(ref), **kwargs)

    @classmethod
    def folder(cls, path: str, **kwargs: Any) -> Collection:
        """A plain folder's own files (``--images DIR``), or one file (a PDF, a TIFF, a
        manifest, a page image) on its own."""
        from kzjobs.core.store import open_store

        file = Path(path).expanduser()
        if "://" not in path and file.is_file():
            return cls(open_store(file.parent), ("",), only=file.name, **kwargs)
        return cls(open_store(path), ("",), **kwargs)

    @classmethod
    def of(cls, store: Store, **kwargs: Any) -> Collection:
        """The competition's folder reads ``test_images/`` (its unlabelled pages) in
        ``sample_submission.csv``'s order; a dataset layout its page folders; any other
        folder its own files."""
        tops = {k.split("/", 1)[0] for k in store.list() if "/" in k}
        if store.exists(SAMPLE_SUBMISSION) and "test_images" in tops:
            return cls(store, ("test_images",), order_from=SAMPLE_SUBMISSION, **kwargs)
        if tops & set(IMAGE_DIRS):
            return cls(store, IMAGE_DIRS, **kwargs)
        return cls(store, ("",), **kwargs)

    @cached_property
    def fetcher(self) -> Fetcher:
        from kzjobs.core.fetch import Fetcher

        return Fetcher(self.settings)

    # -- scanning ---------------------------------------------------------------------

    @cached_property
    def scan(self) -> Scan:
        ignored: Counter[str] = Counter()
        pages: list[PageRef] = []
        rejected: list[Rejected] = []
        manifests: dict[str, bytes] = {}
        found = [self._expand(key, manifests) for key in self._candidates(ignored)]
        found += [self._manifest(url, url, _url_book(url), manifests)
                  for url in self.manifest_urls]
        for each in found:
            if isinstance(each, Rejected):
                rejected.append(each)
            else:
                pages.extend(each)
        pages, rejected = self._unique(pages, rejected)
        order = None
        if self.order_from and self.store is not None:
            pages, rejected, order = self._ordered(pages, rejected)
        return Scan(pages, rejected, dict(ignored), manifests, order)

    def _candidates(self, ignored: Counter[str]) -> list[str]:
        if self.store is None:
            return []
        if self.only is not None:
            return [self.only] if self.only in self.store.list() else []
        keys = []
        for key in self.store.list():
            folder, _, rest = key.partition("/")
            if self.folders == ("",):
                if rest:
                    ignored["in a subfolder (a folder's own files are its pages)"] += 1
                    continue
                if key in METADATA:
                    continue
            elif not rest or folder not in self.folders:
                if rest and folder in IMAGE_DIRS:
                    ignored[f"not this run's pages ({folder}/)"] += 1
                continue
            name = key_name(key)
            if name in SYSTEM_FILES or name.startswith("._"):
                ignored[f"system file ({'._*' if name.startswith('._') else name})"] += 1
                continue
            keys.append(key)
        return keys

    def _escapes(self, key: str) -> str | None:
        """The target of a symbolic link that leads out of the collection, if ``key`` is one
        (or lies under one); the file is not opened."""
        assert self.store is not None
        path = self.store.local_path(key, listed=True)
        if path is None:
            return None
        root = path.parents[len(key.split("/")) - 1]
        if not any(p.is_symlink() for p in (path, *path.parents[: len(key.split("/")) - 1])):
            return None
        target = Path(os.path.realpath(path))
        return None if target.is_relative_to(os.path.realpath(root)) else str(target)

    def _expand(self, key: str, manifests: dict[str, bytes]) -> list[PageRef] | Rejected:
        name = key_name(key)
        stem, suffix = split_name(name)
        target = self._escapes(key)
        if target is not None:
            return Rejected(name, key, f"symbolic link to outside the collection ({target}): "
                                       "not opened")
        if name.startswith("."):
            return Rejected(name, key, "hidden file")
        if suffix not in SUFFIX_FORMATS:
            return Rejected(name, key, f"unsupported file type {suffix or '(no suffix)'}: "
                            "pages are JPEG, PNG, TIFF, JPEG 2000, WebP, PDF or a IIIF "
                            "manifest (.json)")
        try:
            ident = page_id(stem)
        except UnsafeName as exc:
            return Rejected(name, key, str(exc))
        if suffix == PDF:
            return self._pdf_pages(key, name, ident)
        if suffix == MANIFEST:
            try:
                data = self.store.read_listed(key)  # type: ignore[union-attr]
            except (KeyError, UnsafeKeyError) as exc:
                return Rejected(ident, key, f"cannot read: {exc}")
            return self._manifest(key, name, ident, manifests, data)
        if IMAGE_FORMATS[suffix] == "TIFF":
            return self._tiff_pages(key, name, ident)
        return [PageRef(ident, key, name, IMAGE_FORMATS[suffix])]

    def _file(self, key: str) -> Any:
        """A local file's path (read lazily by the decoders), else its bytes in memory."""
        assert self.store is not None
        path = self.store.local_path(key, listed=True)
        return str(path) if path is not None else io.BytesIO(self.store.read_listed(key))

    def _tiff_pages(self, key: str, name: str, ident: str) -> list[PageRef] | Rejected:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(self._file(key)) as img:
                    frames = page_frames(img)
        except (KeyError, UnsafeKeyError) as exc:
            return Rejected(ident, key, f"cannot read: {exc}")
        except Exception as exc:  # PIL raises many types for corrupt input
            return Rejected(ident, key, f"cannot decode image: {type(exc).__name__}: {exc}")
        if len(frames) == 1:  # a single page: a page like any JPEG
            return [PageRef(ident, key, name, "TIFF", index=frames[0])]
        return [PageRef(page_of(ident, n), key, name, "TIFF", book=ident, page=n, index=f)
                for n, f in enumerate(frames, start=1)]

    def _pdf_pages(self, key: str, name: str, ident: str) -> list[PageRef] | Rejected:
        import pypdfium2

        try:
            with _PDFIUM:
                doc = pypdfium2.PdfDocument(self._file(key))
                try:
                    count = len(doc)
                finally:
                    doc.close()
        except (KeyError, UnsafeKeyError) as exc:
            return Rejected(ident, key, f"cannot read: {exc}")
        except pypdfium2.PdfiumError as exc:
            if getattr(exc, "err_code", None) == PASSWORD_ERROR:
                return Rejected(ident, key, "encrypted PDF: it needs a password")
            return Rejected(ident, key, f"broken PDF: {exc}")
        limit = self.settings.pdf_max_pages
        if count > limit:
            return Rejected(ident, key, f"PDF of {count} pages, over the limit of {limit} "
                            "(KZ_PDF_MAX_PAGES): not read")
        if not count:
            return Rejected(ident, key, "PDF with no pages")
        return [PageRef(page_of(ident, n), key, name, "PDF", book=ident, page=n, index=n - 1)
                for n in range(1, count + 1)]

    def _manifest(self, where: str, name: str, book: str, manifests: dict[str, bytes],
                  data: bytes | None = None) -> list[PageRef] | Rejected:
        from kzjobs.core.fetch import FetchError
        from kzjobs.data.iiif import ManifestError, parse_manifest

        try:
            if data is None:
                data = self.fetcher.get(where, accept="application/ld+json, application/json")
            manifest = parse_manifest(data, max_size=self.settings.iiif_max_size)
        except (FetchError, ManifestError) as exc:
            return Rejected(book, where, f"manifest not read: {exc.reason}")
        manifests[book] = data
        pages = []
        for n, canvas in enumerate(manifest.canvases, start=1):
            size = (canvas.width, canvas.height) if canvas.width and canvas.height else None
            # A canvas with no image is a page that fails, with its reason, when read.
            image = f"error:{canvas.error}" if canvas.error else canvas.image
            pages.append(PageRef(page_of(book, n), where, name, "IIIF", book=book, page=n,
                                 canvas=canvas.id or None, manifest=manifest.id or where,
                                 image=image, canvas_size=size))
        return pages

    @staticmethod
    def _unique(pages: list[PageRef], rejected: list[Rejected]
                ) -> tuple[list[PageRef], list[Rejected]]:
        """Two files giving one id: both refused, as nothing says which one is right."""
        by_id: dict[str, list[PageRef]] = defaultdict(list)
        for page in pages:
            by_id[page.id].append(page)
        unique = []
        for ident, refs in by_id.items():
            if len(refs) == 1:
                unique.append(refs[0])
                continue
            names = sorted({r.key for r in refs})
            rejected += [Rejected(ident, r.key, f"{len(refs)} files give page id {ident!r}: "
                                                f"{names}") for r in refs]
        return sorted(unique, key=lambda p: p.id), rejected

    def _ordered(self, pages: list[PageRef], rejected: list[Rejected]
                 ) -> tuple[list[PageRef], list[Rejected], list[str]]:
        """The competition's pages: those ``sample_submission.csv`` lists, in its order."""
        from kzjobs.data.format import LABEL_COLUMNS, read_rows

        assert self.store is not None and self.order_from is not None
        order = list(dict.fromkeys(r[0] for r in read_rows(
            self.store.read_bytes(self.order_from), LABEL_COLUMNS)))
        by_id = {p.id: p for p in pages}
        refused = {r.item for r in rejected}
        listed = set(order)
        kept = []
        for ident in order:
            if ident in by_id:
                kept.append(by_id[ident])
            elif ident not in refused:
                try:
                    ok = page_id(ident) == ident
                except UnsafeName:
                    ok = False
                rejected.append(Rejected(ident, self.order_from, (
                    f"no image for this id in {self.folders[0]}/" if ok else
                    f"unsafe image id in {self.order_from}: not looked up")))
        rejected += [Rejected(p.id, p.key, f"not in {self.order_from}")
                     for p in pages if p.id not in listed]
        return kept, rejected, order

    # -- reading ----------------------------------------------------------------------

    def read(self, page: PageRef) -> Image.Image:
        """The page as an RGB image, or :class:`ImageError` (a fetch's too) with the reason."""
        if page.format == "IIIF":
            return self._canvas_image(page)
        if self.store is None:
            raise KeyError(page.key)
        if page.format == "PDF":
            return self._render(page)
        return open_image(self._bytes(page), max_pixels=self.max_pixels, frame=page.index)

    def _bytes(self, page: PageRef) -> bytes:
        """A page file's bytes; a multi-page TIFF's are kept for its next page (its pages
        come one after another), so a book is read from the store once, not once a page."""
        assert self.store is not None
        if page.book is None:
            return self.store.read_listed(page.key)
        last = self._last
        if last is None or last[0] != page.key:
            last = self._last = (page.key, self.store.read_listed(page.key))
        return last[1]

    def page_size(self, page: PageRef) -> tuple[int, int]:
        """A PDF page's or a canvas's size as :meth:`read` would give it, without
        rendering or fetching (a canvas's from its manifest, scaled to ``KZ_IIIF_MAX_SIZE``
        as the Image API request asks); another page's from its header. Or
        :class:`ImageError`."""
        if page.format == "IIIF":
            if not page.canvas_size:
                raise ImageError("the manifest gives no size for this canvas")
            width, height = page.canvas_size
            scale = min(1.0, self.settings.iiif_max_size / max(width, height))
            return round(width * scale), round(height * scale)
        if page.format == "PDF":
            import math

            import pypdfium2

            scale = self.settings.pdf_dpi / 72
            with _PDFIUM:
                try:
                    width, height = self._pdf_document(page).get_page_size(page.index)
                except pypdfium2.PdfiumError as exc:
                    raise ImageError(f"cannot read PDF page {page.page}: {exc}") from None
            # PDFium renders a fractional pixel as a whole one
            return math.ceil(width * scale - 1e-6), math.ceil(height * scale - 1e-6)
        from PIL import Image

        try:
            with Image.open(io.BytesIO(self._bytes(page))) as img:
                img.seek(page.index)
                return img.size
        except (KeyError, UnsafeKeyError):
            raise
        except Exception as exc:  # PIL raises many types for corrupt input
            raise ImageError(f"image header unreadable: {exc}") from None

    def _canvas_image(self, page: PageRef) -> Image.Image:
        from kzjobs.core.fetch import FetchError

        if not page.image or page.image.startswith("error:"):
            raise ImageError((page.image or "error:no image").removeprefix("error:"))
        try:
            data = self.fetcher.get(page.image, accept="image/jpeg, image/*")
        except FetchError as exc:
            raise ImageError(exc.reason) from None
        return open_image(data, max_pixels=self.max_pixels)

    def _render(self, page: PageRef) -> Image.Image:
        """One PDF page at ``KZ_PDF_DPI``; the document stays open for the next page (a
        book's pages come one after another), so a page costs its own rendering only."""
        import pypdfium2

        scale = self.settings.pdf_dpi / 72
        with _PDFIUM:
            try:
                pdf_page = self._pdf_document(page)[page.index]
                try:
                    width, height = (round(v * scale) for v in pdf_page.get_size())
                    if width * height > self.max_pixels:
                        raise ImageError(f"page too large: {width}x{height} px at "
                                         f"{self.settings.pdf_dpi} DPI is over "
                                         f"{self.max_pixels:,} pixels")
                    return pdf_page.render(scale=scale).to_pil().convert("RGB")
                finally:
                    pdf_page.close()
            except pypdfium2.PdfiumError as exc:
                raise ImageError(f"cannot render PDF page {page.page}: {exc}") from None

    def _pdf_document(self, page: PageRef) -> Any:
        """The open document of ``page``'s PDF (under ``_PDFIUM``): kept open for the next
        page, since a book's pages come one after another."""
        import pypdfium2

        if self._pdf is None or self._pdf[0] != page.key:
            self.close()
            self._pdf = (page.key, pypdfium2.PdfDocument(self._file(page.key)))
        return self._pdf[1]

    def close(self) -> None:
        self._last = None
        if self._pdf is not None:
            self._pdf[1].close()
            self._pdf = None
