"""The recognition job: a collection in, per-page results and merged outputs out.

Work is split in shards (``--shard i/n`` takes every n-th page of the sorted ids) and
made resumable per page: a page is done when ``pages/<id>.json`` exists, so a re-run
after a crash only reads the pages still missing, and the merge rebuilds the same
bytes. Pages that cannot be read are quarantined with their reason and the rest go on.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator

from kzjobs.core.job import Cli, Job
from kzjobs.core.quarantine import (
    Quarantined,
    entries,
    quarantine_bytes,
    read_quarantine,
    write_quarantine,
)
from kzjobs.core.store import (
    KeyExistsError,
    Store,
    UnsafeKeyError,
    join,
    json_bytes,
    validate_key,
)
from kzjobs.data.books import book_id
from kzjobs.data.collection import Collection, PageRef, manifest_key
from kzjobs.export import parse_formats
from kzjobs.recognize import PAGES_PER_BATCH, adapt
from kzjobs.recognize.outputs import done_pages, merge
from kzjobs.validate.config import MAX_ID_LENGTH

if TYPE_CHECKING:
    from kzjobs.recognize.outputs import PageResult
    from kzjobs.recognize.recognizer import Recognizer

log = logging.getLogger(__name__)
QUARANTINE = "quarantine"
MODEL_KEY = "model.json"  # the model an output prefix's pages are read with, written once


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        index, count = (int(p) for p in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n, got {shard!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {shard!r}: need 0 <= i < n")
    return index, count


def own_location(ref: str) -> bool:
    """Whether ``ref`` is a folder path or URI of its own, not a key inside the store."""
    return "://" in ref or ref.startswith(("/", ".", "~"))


def open_location(ref: str, store: Store) -> Store:
    """A store key inside ``store``, or a folder path / URI of its own."""
    if own_location(ref):
        from kzjobs.core.store import open_store

        return open_store(ref)
    return store.child(ref)


def safe_id(image_id: str) -> bool:
    """An id usable as one part of a store key (``pages/<id>.json``), so never a path."""
    try:
        return "/" not in validate_key(image_id) and len(image_id) <= MAX_ID_LENGTH
    except UnsafeKeyError:
        return False


def page_quarantine_key(image_id: str) -> str:
    """Where a page's quarantine entry goes; an unsafe id gets a digest for a name."""
    if safe_id(image_id):
        return join(QUARANTINE, f"{image_id}.json")
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return join(QUARANTINE, f"unsafe-id-{digest}.json")


def _read_quarantine(out: Store) -> list[Quarantined]:
    return [q for k in out.list(QUARANTINE) if k.endswith(".json")
            for q in read_quarantine(out, k)]


def quarantined_pages(out: Store) -> set[str]:
    """Ids quarantined by recognition (read from the entries: a file name may be a digest)."""
    return {q.item for q in _read_quarantine(out)}


class _CollectionJob(Job):
    collection: Annotated[str | None, Cli(("--collection", "--manifest"))] = Field(
        None, description="Collection: a store key, folder, s3:// URI or IIIF manifest URL "
        "(--manifest: the same, for a manifest URL).")
    images: str | None = Field(None, description="A plain folder of pages instead (images, "
                               "PDFs, TIFFs, IIIF manifests), or one such file.")
    out: str = Field(description="Output prefix: a store key, folder or s3:// URI.")
    validation: str | None = Field(None, description="Prefix of a `kzjobs validate batch` run: "
                                   "read only its passed pages.")
    formats: Annotated[list[str], Cli(sep=",")] = Field(
        default_factory=list, description="Library formats to write at merge, "
        "comma-separated: alto, page (PAGE XML), tei, iiif (annotations; a manifest copy for "
        "manifest input), pdf (searchable, one per book); or all.")
    base_url: str | None = Field(None, description="Public URL the output prefix is served "
                                 "at, for IIIF ids (default: its own URI).")

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> list[str]:
        return parse_formats(value)

    @field_validator("out")
    @classmethod
    def _out(cls, value: str) -> str:
        """``--out out/`` as people type it: the key ``out``."""
        return value if own_location(value) else value.rstrip("/")

    def source(self) -> Collection:
        if bool(self.collection) == bool(self.images):
            raise ValueError("give exactly one of --collection, --manifest and --images")
        if self.images:
            return Collection.folder(self.images, settings=self.settings)
        return Collection.open(self.collection or "", self.store, settings=self.settings)

    def output(self) -> Store:
        return open_location(self.out, self.store)

    def pages(self, coll: Collection) -> tuple[list[PageRef], list[Quarantined]]:
        """(pages to recognize, quarantine entries of what is not read: one per file or
        page refused, by the collection's reading or by validation).

        A collection with no files at all is an error, most often a mistyped key: an
        empty submission would look like a run that read nothing wrong."""
        scan = coll.scan
        if not self.validation:
            if not scan.pages and not scan.rejected:
                unread = f" (not pages: {scan.ignored})" if scan.ignored else ""
                raise ValueError(f"no page images in {coll.uri}{unread}")
            return scan.pages, list(scan.rejected)
        # Validation judged every page of the collection, so its passed ids are the pages
        # (not train.csv's ids: a labelled collection's other files would vanish), and
        # every rejected file is kept, so two copies of one id are two pages in.
        passed = self.store.read_json(join(self.validation, "passed.json"))
        rejected = [q.model_copy(update={"stage": "validate"}) for q in
                    read_quarantine(self.store, join(self.validation, "quarantine.json"))]
        pages = [scan.by_id[i] for i in dict.fromkeys(passed) if i in scan.by_id]
        gone = "passed validation, no longer in the collection"
        rejected += [Quarantined(item=i, reason=gone, stage="read")
                     for i in dict.fromkeys(passed) if i not in scan.by_id]
        return pages, rejected

    @staticmethod
    def keep_sources(out: Store, coll: Collection) -> list[str]:
        """A copy of every manifest read (``sources/<book>.manifest.json``), as read, for
        the outputs that link into it."""
        keys = []
        for book, data in sorted(coll.scan.manifests.items()):
            key = manifest_key(book)
            if not out.exists(key) or out.read_bytes(key) != data:
                out.write_bytes(key, data)
            keys.append(key)
        return keys


class RecognizeJob(_CollectionJob):
    # Inference settings (page scale, thresholds, TTA) are the bundle's own, the ones it
    # was trained and evaluated with; a profile given here overrides them.
    profile_name: Annotated[str | None, Cli(("--profile", "-p"))] = Field(  # type: ignore[assignment]
        None, description="Override the bundle's own inference settings (tiny, demo, bench, "
        "full or a YAML).")
    model: str = Field(description="Bundle key/path or models:/ URI.")
    shard: str = Field("0/1", description="i/n: this job's share of the pages.")
    batch: int = Field(PAGES_PER_BATCH, ge=1,
                       description="Pages read before level 2 decides for them in one call.")
    workers: int = Field(0, ge=0, description="Pages read side by side in threads, sharing "
                         "the models (0: one per torch CPU thread, up to 8; 1 on a GPU).")
    device: str | None = Field(None, description="cpu, cuda or auto.")
    progress: bool = Field(True, description="Progress bar on stderr.")
    adapt: bool | None = Field(None, description="Fit each book's class shifts on its own "
                               "pages, reading them in two passes; without, the model's own "
                               "shifts for the books it adapted to (default: the model's "
                               "pseudo.class_shift).")

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        parse_shard(value)
        return value

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        from kzjobs.core.images import ImageError
        from kzjobs.recognize.outputs import write_page
        from kzjobs.recognize.recognizer import Recognizer, bundle_profile, page_workers
        from kzjobs.release.model_ref import open_bundle

        index, count = parse_shard(self.shard)
        coll = self.source()
        out = self.output()
        refs, _rejected = self.pages(coll)
        self._claim(out)  # once the collection is known to hold pages
        by_id = {ref.id: ref for ref in refs}
        self.keep_sources(out, coll)
        mine = sorted(by_id)[index::count]
        done = done_pages(out) | quarantined_pages(out)
        todo = [i for i in mine if i not in done]
        summary: dict[str, Any] = {
            "out": out.uri, "shard": self.shard, "pages": len(mine),
            "already_done": len(mine) - len(todo), "recognized": 0, "quarantined": 0,
        }
        if todo:
            bundle, root = open_bundle(self.model, self.store)
            profile = bundle_profile(bundle, self.profile_name)
            adapting = adapt.adapting(profile, self.adapt)
            recognizer = Recognizer.from_bundle(
                bundle, root, profile=profile, device=self.device or self.settings.device
            ).with_books({ref.id: ref.book for ref in refs if ref.book})
            if adapting:
                # It fits every book's shifts itself, on the logits of the very models that
                # read it: the bundle's were fitted on its models before fine-tuning
                # (bench/RESULTS.md, 'Run of 2026-12-05 14:09 UTC').
                recognizer = recognizer.without_book_shifts()
            workers = self.workers or page_workers(recognizer.device)
            summary["workers"] = workers
            started = time.perf_counter()

            def readable(ids: list[str], step: str = "recognize") -> Iterator[tuple[str, Any]]:
                """Those of ``ids`` that decode; the others are quarantined here."""
                for image_id in tqdm(ids, desc=f"{step} {self.shard}", file=sys.stderr,
                                     disable=not self.progress, dynamic_ncols=True):
                    try:
                        if not safe_id(image_id):  # its outputs' keys would leave their folders
                            raise UnsafeKeyError("unsafe image id")
                        image = coll.read(by_id[image_id])
                    except (ImageError, KeyError, UnsafeKeyError) as exc:
                        reason = getattr(exc, "reason", None) or str(exc).strip("'\"")
                        log.warning("quarantined %r: %s", image_id, reason)
                        write_quarantine(out, page_quarantine_key(image_id), Quarantined(
                            item=image_id, reason=reason, stage="recognize"))
                        summary["quarantined"] += 1
                        continue
                    yield image_id, image

            if adapting:
                stream = self._adapted(recognizer, out, todo, readable, workers, summary)
            else:
                stream = recognizer.recognize_stream(readable(todo), self.batch, workers)
            for result, image in stream:
                result.source = by_id[result.image_id].source()
                write_page(out, result, image)
                summary["recognized"] += 1
                # One line per committed page: the job's progress in its task log, and what
                # shows that a re-run after a crash redoes no finished page.
                log.info("recognized %s: %d characters", result.image_id, len(result.chars))
            seconds = time.perf_counter() - started
            summary["seconds"] = round(seconds, 2)
            summary["pages_per_second"] = round(summary["recognized"] / seconds, 3)
            coll.close()
        if count == 1:
            summary["merge"] = MergeJob(**self._merge_fields()).run()
        return summary

    def _claim(self, out: Store) -> None:
        """Record, once, the model this prefix's pages are read with: a later run with
        another one (a new champion, same alias) would find every page done and publish
        the old readings as its own. Shards and re-runs with the same model agree."""
        model = resolved_model(self.model)
        try:
            out.write_once(MODEL_KEY, json_bytes({"model": model}))
        except KeyExistsError as exc:
            made = out.read_json(MODEL_KEY).get("model")
            raise KeyExistsError(
                f"outputs already exist at {out.uri}, read with {made}; this run reads with "
                f"{model}: choose a new out_prefix (nothing was overwritten)") from exc

    def _adapted(self, recognizer: Recognizer, out: Store, todo: list[str],
                 readable: Callable[..., Iterator[tuple[str, Any]]], workers: int,
                 summary: dict[str, Any]) -> Iterator[tuple[PageResult, Any]]:
        """The shard's results, each book read with the class shifts fitted on its pages
        (see :mod:`kzjobs.recognize.adapt` for the passes and how they resume)."""
        adapt.check_shares(recognizer, self.model, "--no-adapt")
        framed = adapt.framed_pages(out)
        unread = [i for i in todo if i not in framed]
        for (image_id, _), frames in recognizer.read_stream(readable(unread, "read"), workers,
                                                           ahead=self.batch + workers):
            adapt.write_frames(out, image_id, frames)
        framed = adapt.framed_pages(out)
        read = [i for i in todo if i in framed]
        key = adapt.shifts_key(self.shard)
        if not out.exists(key):
            out.write_json(key, adapt.fit_books(read, partial(adapt.read_frames, out),
                                                recognizer.class_shares,
                                                recognizer.profile.pseudo,
                                                book_of=recognizer.book_of))
        shifts = out.read_json(key)
        summary["adaptation"] = {"shifts": key, "books": len(shifts),
                                 "classes_shifted": sum(map(len, shifts.values()))}
        # Pages read again for their images (the review pages draw on them), not networks.
        pages = ((page, adapt.shifted(adapt.read_frames(out, page[0]),
                                      shifts.get(recognizer.book_of(page[0]), {})))
                 for page in readable(read, "decide"))
        yield from recognizer.decide_stream(pages, self.batch)
        # Every finished page's frames, this run's and a crashed run's alike.
        for image_id in sorted(adapt.framed_pages(out) & (done_pages(out)
                                                           | quarantined_pages(out))):
            out.delete(adapt.frames_key(image_id))

    def _merge_fields(self) -> dict[str, Any]:
        fields = ("store_uri", "collection", "images", "out", "validation", "formats",
                  "base_url")
        return {f: getattr(self, f) for f in fields}


def resolved_model(ref: str) -> str:
    """``ref`` with a registry alias resolved to its version (``models:/name/3``): the
    same alias names another model once it moves. Bundle keys and paths stay as given."""
    if not ref.startswith("models:/"):
        return ref
    from kzjobs.release.registry import get_version, version_ref

    version = get_version(ref)
    if version is None:
        raise LookupError(f"no registered version for {ref!r}")
    return version_ref(version.version, version.name)


def adapted_books(out: Store, books: set[str]) -> dict[str, dict[str, dict[str, float]]]:
    """``{shards' key: {book: {code: shift}}}``: the shifts ``--adapt`` fitted to
    ``books`` (an output prefix may hold other collections' too)."""
    found = {key: {b: s for b, s in out.read_json(key).items() if b in books}
             for key in out.list(adapt.ADAPTATION) if key.endswith(".json")}
    return {key: shifts for key, shifts in found.items() if shifts}


class MergeJob(_CollectionJob):
    """Merge the shards' pages into ``submission.csv``, the review index and a report.

    Fails loudly, naming the pages, when a page was neither recognized nor quarantined:
    a shard did not finish, and re-running it completes the collection.

    The merged outputs are final: each is written once (``Store.write_once``), the
    report last, so a report means the merge finished. A merge run again over the same
    results finds the same bytes and changes nothing (or completes one that crashed
    half-way); results that differ (another model, new pages) are refused rather than
    overwriting what was published.
    """

    def run(self) -> dict[str, Any]:
        coll = self.source()
        out = self.output()
        refs, rejected = self.pages(coll)
        ids = [ref.id for ref in refs]
        books = {ref.id: ref.book or book_id(ref.id) for ref in refs}
        done = done_pages(out)
        quarantine = list(rejected)
        # Only this collection's pages: the output prefix may hold older runs' entries.
        wanted = set(ids)
        quarantine += [q for q in _read_quarantine(out) if q.item in wanted]
        quarantined = {q.item for q in quarantine}
        missing = [i for i in ids if i not in done and i not in quarantined]
        if missing:
            raise RuntimeError(
                f"{len(missing)} pages have no result yet (re-run their shard): {missing[:10]}"
            )
        recognized = [i for i in ids if i in done]
        # The competition's folder: exactly sample_submission.csv's ids, in its order (a
        # page that was not read is there with no characters, as Kaggle wants every id).
        try:
            merged = merge(out, recognized, order=coll.scan.order)
        except KeyExistsError as exc:
            raise _published(out, exc) from exc
        exported = {}
        if self.formats:
            from kzjobs.export.write import write_formats

            # The PDF draws each page's image again, read from the collection one by one.
            by_id = {ref.id: ref for ref in refs}
            exported = write_formats(out, recognized, self.formats, base_url=self.base_url,
                                     read_image=lambda i: coll.read(by_id[i]))
        adaptation = adapted_books(out, {books[i] for i in recognized})
        sources = self.keep_sources(out, coll)
        quarantine.sort(key=lambda q: (q.item, q.key or ""))
        report = {
            # pages_in == recognized + quarantined: every file in is accounted for once.
            "pages_in": len(ids) + len(rejected),
            "recognized": len(recognized),
            "quarantined": len(quarantine),
            "characters": merged["characters"],
            "quarantine": entries(quarantine),
            # files that are not pages (system files, a plain folder's subfolders), counted
            **({"ignored": coll.scan.ignored} if coll.scan.ignored else {}),
            # a copy of each IIIF manifest read, by book
            **({"sources": sources} if sources else {}),
            # each shard's class shifts of this collection's books, when read with --adapt
            **({"adaptation": adaptation} if adaptation else {}),
            # a key in the store, or the full URI when --out named a location of its own
            # (an s3:// or absolute --out is no key: joining it failed, or lost its root)
            # or the run read a folder of its own (--images: a person looks for the file)
            "submission": (f"{out.uri}/submission.csv" if self.images or own_location(self.out)
                           else join(self.out, "submission.csv")),
            "review": f"{out.uri}/review/index.html",
            # files written per library format (alto/, page/, tei/, iiif/, pdf/)
            **({"formats": exported} if exported else {}),
            "report": f"{out.uri}/report.json",
        }
        try:
            out.write_once("quarantine.json", quarantine_bytes(quarantine))
            out.write_once("report.json", json_bytes(report))
        except KeyExistsError as exc:
            raise _published(out, exc) from exc
        return {k: v for k, v in report.items() if k != "quarantine"}


def _published(out: Store, exc: KeyExistsError) -> KeyExistsError:
    return KeyExistsError(f"outputs already exist at {out.uri} and this run's differ: "
                          f"choose a new out_prefix (nothing was overwritten; {exc})")
