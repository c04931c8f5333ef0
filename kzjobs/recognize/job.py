"""The recognition job: a collection in, per-page results and merged outputs out.

Work is split in shards (``--shard i/n`` takes every n-th page of the sorted ids) and
made resumable per page: a page is done when ``pages/<id>.json`` exists, so a re-run
after a crash only reads the pages still missing, and the merge rebuilds the same
bytes. Pages that cannot be read are quarantined with their reason and the rest go on.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from pydantic import field_validator

from kzjobs.data.dataset import Dataset
from kzjobs.job import Job
from kzjobs.recognize.outputs import done_pages, merge
from kzjobs.store import Store, join

log = logging.getLogger(__name__)
QUARANTINE = "quarantine"


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        index, count = (int(p) for p in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n, got {shard!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {shard!r}: need 0 <= i < n")
    return index, count


def open_location(ref: str, store: Store) -> Store:
    """A store key inside ``store``, or a folder path / URI of its own."""
    if "://" in ref or ref.startswith(("/", ".", "~")):
        from kzjobs.store import open_store

        return open_store(ref)
    return store.child(ref)


class _CollectionJob(Job):
    collection: str | None = None
    images: str | None = None
    out: str
    validation: str | None = None  # a validate-batch prefix: only its passed pages are read

    def dataset(self) -> Dataset:
        if bool(self.collection) == bool(self.images):
            raise ValueError("give exactly one of --collection and --images")
        if self.images:
            return Dataset.from_folder(self.images)
        return Dataset.open(self.collection, self.store)

    def output(self) -> Store:
        return open_location(self.out, self.store)

    def pages(self, ds: Dataset) -> tuple[list[str], dict[str, str]]:
        """(ids to recognize, {id: reason} quarantined by validation)."""
        ids = ds.image_ids()
        if not self.validation:
            return ids, {}
        passed = set(self.store.read_json(join(self.validation, "passed.json")))
        rejected = {
            q["item"]: q["reason"]
            for q in self.store.read_json(join(self.validation, "quarantine.json"))
        }
        return [i for i in ids if i in passed], rejected


class RecognizeJob(_CollectionJob):
    model: str
    shard: str = "0/1"
    device: str | None = None
    progress: bool = True

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        parse_shard(value)
        return value

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        from kzjobs.bundle import open_bundle
        from kzjobs.images import ImageError
        from kzjobs.recognize.outputs import write_page
        from kzjobs.recognize.recognizer import Recognizer
        from kzjobs.store import UnsafeKeyError

        index, count = parse_shard(self.shard)
        ds = self.dataset()
        out = self.output()
        ids, _rejected = self.pages(ds)
        mine = sorted(ids)[index::count]
        done = done_pages(out) | {k.rsplit("/", 1)[-1][:-5] for k in out.list(QUARANTINE)}
        todo = [i for i in mine if i not in done]
        summary: dict[str, Any] = {
            "out": out.uri, "shard": self.shard, "pages": len(mine),
            "already_done": len(mine) - len(todo), "recognized": 0, "quarantined": 0,
        }
        if todo:
            bundle, root = open_bundle(self.model, self.store)
            recognizer = Recognizer.from_bundle(
                bundle, root, profile=self.profile_name,
                device=self.device or self.settings.device,
            )
            started = time.perf_counter()
            for image_id in tqdm(todo, desc=f"recognize {self.shard}", file=sys.stderr,
                                 disable=not self.progress, dynamic_ncols=True):
                try:
                    image = ds.read_image(image_id)
                except (ImageError, KeyError, UnsafeKeyError) as exc:
                    reason = getattr(exc, "reason", None) or str(exc).strip("'\"")
                    log.warning("quarantined %s: %s", image_id, reason)
                    out.write_json(join(QUARANTINE, f"{image_id}.json"),
                                   {"item": image_id, "reason": reason, "stage": "recognize"})
                    summary["quarantined"] += 1
                    continue
                write_page(out, recognizer.recognize_page(image_id, image), image)
                summary["recognized"] += 1
            seconds = time.perf_counter() - started
            summary["seconds"] = round(seconds, 2)
            summary["pages_per_second"] = round(summary["recognized"] / seconds, 3)
        if count == 1:
            summary["merge"] = MergeJob(**self._merge_fields()).run()
        return summary

    def _merge_fields(self) -> dict[str, Any]:
        fields = ("store_uri", "profile_name", "collection", "images", "out", "validation")
        return {f: getattr(self, f) for f in fields}


class MergeJob(_CollectionJob):
    """Merge the shards' pages into ``submission.csv``, the review index and a report.

    Fails loudly, naming the pages, when a page was neither recognized nor quarantined:
    a shard did not finish, and re-running it completes the collection.
    """

    def run(self) -> dict[str, Any]:
        ds = self.dataset()
        out = self.output()
        ids, rejected = self.pages(ds)
        done = done_pages(out)
        quarantine = [{"item": i, "reason": r, "stage": "validate"} for i, r in rejected.items()]
        quarantine += [out.read_json(k) for k in out.list(QUARANTINE) if k.endswith(".json")]
        quarantined = {q["item"] for q in quarantine}
        missing = [i for i in ids if i not in done and i not in quarantined]
        if missing:
            raise RuntimeError(
                f"{len(missing)} pages have no result yet (re-run their shard): {missing[:10]}"
            )
        recognized = [i for i in ids if i in done]
        merged = merge(out, recognized)
        quarantine.sort(key=lambda q: q["item"])
        report = {
            "pages_in": len(ids) + len(rejected),
            "recognized": len(recognized),
            "quarantined": len(quarantine),
            "characters": merged["characters"],
            "quarantine": quarantine,
            "submission": join(self.out, "submission.csv") if not self.images else "",
            "review": f"{out.uri}/review/index.html",
        }
        out.write_json("quarantine.json", quarantine)
        out.write_json("report.json", report)
        return {k: v for k, v in report.items() if k != "quarantine"}
