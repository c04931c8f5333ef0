"""Facts about every item, computed in Python, for the expectation suites to check.

What needs Python is done here, once per item: reading and decoding images (with
:func:`kzjobs.core.images.open_image`, which guards against bombs), parsing labels with the
format module's own parsers. The results go into pandas tables of plain columns that
the GX suites in :mod:`kzjobs.validate.suites` check. Every table has a ``row`` column:
the index of the item in the ``pages`` table, so a failing box names its page.

pandas is imported inside functions: this module is reachable from the CLI.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from kzjobs.core.images import ImageError, open_image
from kzjobs.core.store import Store, UnsafeKeyError, key_name
from kzjobs.data.collection import IMAGE_DIRS, IMAGE_FORMATS, Collection, PageRef
from kzjobs.data.format import (
    LABEL_COLUMNS,
    MAX_PREDICTIONS_PER_PAGE,
    FormatError,
    parse_labels,
    parse_points,
    read_rows,
    read_translation,
)
from kzjobs.validate.config import ValidateConfig

if TYPE_CHECKING:
    import pandas as pd

# What a file's name promises (the page image suffixes) and what it must then hold.
SUFFIX_FORMATS = IMAGE_FORMATS

IMAGE_COLUMNS = {
    "file_bytes": "Int64",
    "format": "object",
    "expected_format": "object",
    "mode": "object",
    "width": "Int64",
    "height": "Int64",
    "pixels": "Int64",
    "image_error": "object",
}


class UnusableInput(ValueError):
    """The input as a whole cannot be validated: no item can be judged on its own."""


@dataclass
class Facts:
    """Fact tables (``pages`` first) and the run-time values of the suites' parameters."""

    tables: dict[str, pd.DataFrame]
    params: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def split_name(key: str) -> tuple[str, str]:
    """``images/a_001.jpg`` -> (``a_001``, ``.jpg``); the id of an image file is its stem."""
    stem, dot, suffix = key_name(key).rpartition(".")
    return (stem, f".{suffix.lower()}") if dot and stem else (key_name(key), "")


def image_files(store: Store) -> dict[str, list[str]]:
    """``{image_id: [keys]}`` for every image file; more than one key is an ambiguous id.

    Unlike :attr:`Dataset.image_keys` (first file wins), this keeps every candidate so
    that a duplicate id is seen and quarantined.
    """
    files: dict[str, list[str]] = {}
    for key in _listed(store):
        image_id, suffix = split_name(key)
        if suffix in SUFFIX_FORMATS:
            files.setdefault(image_id, []).append(key)
    return files


def _listed(store: Store) -> list[str]:
    return [key for folder in IMAGE_DIRS for key in store.list(folder)]


def _header(data: bytes, frame: int = 0) -> tuple[str | None, str, tuple[int, int]] | None:
    """(format, mode, size) from the header alone, or None when PIL cannot identify it."""
    with warnings.catch_warnings():
        # Only the header is read here; refusing bombs is open_image's job.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                if frame:
                    img.seek(frame)
                return img.format, img.mode, img.size
        except Exception:  # PIL raises many types for unidentifiable input
            return None


def image_facts(store: Store, key: str, config: ValidateConfig, *, decode: bool,
                frame: int = 0) -> dict[str, Any]:
    """Size, format, mode and decoding error of one image file (its ``frame``-th page)."""
    facts: dict[str, Any] = dict.fromkeys(IMAGE_COLUMNS)
    facts["expected_format"] = SUFFIX_FORMATS.get(split_name(key)[1])
    try:
        data = store.read_listed(key)
    except (KeyError, UnsafeKeyError) as exc:  # a StoreError (S3 down) is no page's fault
        facts["image_error"] = f"cannot read {key!r}: {exc}"
        return facts
    facts["file_bytes"] = len(data)
    header = _header(data, frame)
    if header is not None:
        facts["format"], facts["mode"], (width, height) = header
        facts.update(width=width, height=height, pixels=width * height)
    if decode and len(data) <= config.max_file_bytes:  # too big: not decoded, GX says why
        try:
            open_image(data, max_pixels=config.max_pixels, frame=frame)
        except ImageError as exc:
            facts["image_error"] = exc.reason
    elif not data:
        facts["image_error"] = "empty file (0 bytes)"
    elif header is None:
        facts["image_error"] = "not an image PIL can identify"
    return facts


def probe_images(
    store: Store, keys: Iterable[str], config: ValidateConfig, *, decode: bool
) -> dict[str, dict[str, Any]]:
    """:func:`image_facts` for many keys, on ``config.workers`` threads, with progress."""
    from tqdm import tqdm

    keys = sorted(set(keys))

    def one(key: str) -> dict[str, Any]:
        return image_facts(store, key, config, decode=decode)

    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        done = tqdm(pool.map(one, keys), total=len(keys), desc="images", unit="img",
                    disable=None, leave=False)
        return dict(zip(keys, done, strict=True))


def _error_text(exc: FormatError) -> str:
    return f"token {exc.position}: {exc.reason}" if exc.position is not None else exc.reason


def _read_csv(data: bytes, what: str) -> list[tuple[str, ...]]:
    try:
        return read_rows(data, LABEL_COLUMNS)
    except FormatError as exc:
        raise UnusableInput(f"{what}: {exc}") from None


def _read_key(store: Store, key: str) -> bytes:
    try:
        return store.read_bytes(key)
    except KeyError:
        raise UnusableInput(f"no {key} in {store.uri}") from None


def read_vocabulary(data: bytes, what: str = "unicode_translation.csv") -> dict[str, str]:
    try:
        return read_translation(data)
    except FormatError as exc:
        raise UnusableInput(f"{what}: {exc}") from None


def _frame(rows: list[dict[str, Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(dtypes))
    return frame.astype(dtypes)


def _image_params(config: ValidateConfig) -> dict[str, Any]:
    return {
        "id_pattern": config.id_pattern,
        "modes": list(config.modes),
        "min_side": config.min_side,
        "max_side": config.max_side,
        "max_pixels": config.max_pixels,
        "max_file_bytes": config.max_file_bytes,
    }


def _page_images(
    store: Store, ids: Iterable[str], files: dict[str, list[str]], config: ValidateConfig,
    *, decode: bool,
) -> dict[str, dict[str, Any]]:
    """Image facts per id; an id with several files gets an error instead of a guess."""
    ids = set(ids)
    single = {i: files[i][0] for i in ids if len(files.get(i, ())) == 1}
    probed = probe_images(store, single.values(), config, decode=decode)
    out = {i: probed[k] for i, k in single.items()}
    for i in ids:
        if len(files.get(i, ())) > 1:
            facts = dict.fromkeys(IMAGE_COLUMNS)
            facts["image_error"] = f"{len(files[i])} image files for one id: {sorted(files[i])}"
            out[i] = facts
    return out


PAGE_COLUMNS = {"row": "int64", "image_id": "object", "labels_error": "object"}
BOX_COLUMNS = {
    "row": "int64", "position": "int64", "code": "object", "x": "int64", "y": "int64",
    "w": "int64", "h": "int64", "x2": "int64", "y2": "int64", "width": "Int64", "height": "Int64",
}
POINT_COLUMNS = {
    "row": "int64", "position": "int64", "code": "object", "x": "float64", "y": "float64",
    "width": "Int64", "height": "Int64",
}


def _with_page_size(items: list[dict[str, Any]], pages: list[dict[str, Any]]) -> None:
    for item in items:
        page = pages[item["row"]]
        item["width"], item["height"] = page.get("width"), page.get("height")


def annotation_facts(store: Store, config: ValidateConfig) -> Facts:
    """A labelled dataset: one page row per train.csv row, one box row per box."""
    rows = _read_csv(_read_key(store, "train.csv"), "train.csv")
    vocabulary = read_vocabulary(_read_key(store, "unicode_translation.csv"))
    files = image_files(store)
    images = _page_images(store, (r[0] for r in rows), files, config, decode=True)
    empty = dict.fromkeys(IMAGE_COLUMNS)
    pages, boxes = [], []
    for row, (image_id, labels) in enumerate(rows):
        page = {"row": row, "image_id": image_id, "labels_error": None, "n_boxes": 0}
        page.update(images.get(image_id, empty))
        try:
            parsed = parse_labels(image_id, labels)
        except FormatError as exc:
            page["labels_error"] = _error_text(exc)
        else:
            page["n_boxes"] = len(parsed)
            boxes.extend(
                {"row": row, "position": pos, "code": b.code, "x": b.x, "y": b.y, "w": b.w,
                 "h": b.h, "x2": b.x + b.w, "y2": b.y + b.h}
                for pos, b in enumerate(parsed)
            )
        pages.append(page)
    _with_page_size(boxes, pages)
    labelled = {r[0] for r in rows}
    return Facts(
        tables={
            "pages": _frame(pages, PAGE_COLUMNS | {"n_boxes": "int64"} | IMAGE_COLUMNS),
            "boxes": _frame(boxes, BOX_COLUMNS),
        },
        params=_image_params(config)
        | {"image_ids": sorted(files), "vocabulary": sorted(vocabulary)},
        extra={"unlabelled_images": len(set(files) - labelled)},
    )


def page_facts(coll: Collection, page: PageRef, config: ValidateConfig) -> dict[str, Any]:
    """:func:`image_facts` of one page. A PDF page is rendered as recognition renders it
    (its file's size is no limit: pages are rendered one at a time); a IIIF canvas is
    not fetched here, its image URL is checked against the allowed hosts (DNS included)
    and a failed fetch is quarantined by recognition."""
    if page.format not in ("PDF", "IIIF"):
        assert coll.store is not None
        return image_facts(coll.store, page.key, config, decode=True, frame=page.index)
    facts: dict[str, Any] = dict.fromkeys(IMAGE_COLUMNS)
    if page.format == "IIIF":
        from kzjobs.core.fetch import FetchError

        if not page.image or page.image.startswith("error:"):
            facts["image_error"] = (page.image or "no image").removeprefix("error:")
            return facts
        try:
            coll.fetcher.check(page.image)
        except FetchError as exc:
            facts["image_error"] = exc.reason
        return facts
    facts["expected_format"] = facts["format"] = "PDF"
    try:
        image = coll.read(page)
    except (ImageError, KeyError, UnsafeKeyError) as exc:
        facts["image_error"] = getattr(exc, "reason", None) or str(exc)
        return facts
    facts.update(mode=image.mode, width=image.width, height=image.height,
                 pixels=image.width * image.height)
    return facts


def batch_facts(source: Store | Collection, config: ValidateConfig) -> Facts:
    """An incoming collection: one page row per page its files hold (each page of a PDF,
    multi-page TIFF or manifest), and one row per file (or id) it refused, with the
    reason (``file_error``)."""
    from tqdm import tqdm

    coll = source if isinstance(source, Collection) else Collection.of(
        source, max_pixels=config.max_pixels)
    scan = coll.scan
    if not scan.pages and not scan.rejected:
        raise UnusableInput(f"no files under {', '.join(IMAGE_DIRS)} in {coll.uri}")
    # PDF pages are rendered in this thread, in order (PDFium takes one call at a time
    # and keeps the open document for the next page); the other pages on threads.
    rendered = {p.id: page_facts(coll, p, config) for p in scan.pages if p.format == "PDF"}
    others = [p for p in scan.pages if p.format != "PDF"]
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        done = tqdm(pool.map(lambda p: page_facts(coll, p, config), others), total=len(others),
                    desc="pages", unit="page", disable=None, leave=False)
        facts = rendered | dict(zip((p.id for p in others), done, strict=True))
    coll.close()
    empty = dict.fromkeys(IMAGE_COLUMNS)
    pages = [{"image_id": p.id, "key": p.key, "suffix": p.suffix, "file_error": None}
             | facts[p.id] for p in scan.pages]
    pages += [{"image_id": r.item, "key": r.key, "suffix": split_name(r.key)[1],
               "file_error": r.reason} | empty for r in scan.rejected]
    pages = [{"row": row} | page for row, page in enumerate(pages)]
    columns = {"row": "int64", "image_id": "object", "key": "object", "suffix": "object",
               "file_error": "object"}
    return Facts(
        tables={"pages": _frame(pages, columns | IMAGE_COLUMNS)},
        params=_image_params(config),
        extra={"ignored": scan.ignored} if scan.ignored else {},
    )


def prediction_facts(
    store: Store, submission: bytes, vocabulary: dict[str, str], config: ValidateConfig
) -> Facts:
    """A submission CSV for the collection in ``store``: one page row per CSV row."""
    rows = _read_csv(submission, "predictions CSV")
    files = image_files(store)
    # The pages of PDFs, multi-page TIFFs and manifests, sized without rendering them.
    coll = Collection.of(store, max_pixels=config.max_pixels)
    books = {i: p for i, p in coll.scan.by_id.items() if p.book is not None}
    if not files and not books:
        raise UnusableInput(f"no images in {store.uri}: page ids and sizes cannot be checked")
    known = [r[0] for r in rows if r[0] in files]
    # Only the page size is needed: headers are read, pixels are not decoded.
    images = _page_images(store, known, files, config, decode=False)
    for image_id in {r[0] for r in rows if r[0] in books}:
        facts = dict.fromkeys(IMAGE_COLUMNS)
        try:
            facts["width"], facts["height"] = coll.page_size(books[image_id])
        except (ImageError, KeyError, UnsafeKeyError) as exc:
            facts["image_error"] = getattr(exc, "reason", None) or str(exc)
        images[image_id] = facts
    coll.close()
    files = {**files, **{i: [p.key] for i, p in books.items()}}
    pages, points = [], []
    for row, (image_id, labels) in enumerate(rows):
        page: dict[str, Any] = {"row": row, "image_id": image_id, "labels_error": None,
                                "n_points": 0, "size_error": None, "width": None, "height": None}
        if image_id in images:
            facts = images[image_id]
            page["width"], page["height"] = facts["width"], facts["height"]
            if facts["width"] is None:
                page["size_error"] = facts["image_error"] or "image header unreadable"
        try:
            parsed = parse_points(image_id, labels)
        except FormatError as exc:
            page["labels_error"] = _error_text(exc)
        else:
            page["n_points"] = len(parsed)
            points.extend(
                {"row": row, "position": pos, "code": p.code, "x": p.x, "y": p.y}
                for pos, p in enumerate(parsed)
            )
        pages.append(page)
    _with_page_size(points, pages)
    page_columns = PAGE_COLUMNS | {
        "n_points": "int64", "size_error": "object", "width": "Int64", "height": "Int64",
    }
    return Facts(
        tables={"pages": _frame(pages, page_columns), "points": _frame(points, POINT_COLUMNS)},
        params={
            "id_pattern": config.id_pattern,
            "image_ids": sorted(files),
            "vocabulary": sorted(vocabulary),
            "max_points": MAX_PREDICTIONS_PER_PAGE,
        },
        extra={"pages_without_predictions": len(set(files) - {r[0] for r in rows})},
    )
