"""What a job could not use, and why: one record shape, written one way by every job.

A quarantine file is a JSON list of records (one record a file for recognition's
per-page entries, so a re-run sees what is settled). A record names the ``item`` (a
page id; a file's key when no page is known), the ``reason``, and, when known, the
``stage`` that refused it and where it came from. Fields left unknown are not written,
and the order of the fields is fixed: the same record always gives the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from kzjobs.core.store import Store, json_bytes

log = logging.getLogger(__name__)
SUFFIX = ".quarantine.json"


class Quarantined(BaseModel):
    """One thing a job set aside. Field order is the order records are written in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: str  # a page id, or a file's key or name when it is no page
    key: str | None = None  # the file it was read from (a collection's file)
    row: int | None = None  # its row in the CSV validated
    box_id: int | None = None  # a prediction row's box on the page
    model: str | None = None  # the model (``kind/fold<K>``) whose prediction row it is
    reason: str
    stage: str | None = None  # read, validate, detect, classify, blend, recognize

    def entry(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def records(reasons: Mapping[str, str], stage: str | None = None) -> list[Quarantined]:
    """``{item: reason}`` (what the page readers collect) as records."""
    return [Quarantined(item=item, reason=reason, stage=stage) for item, reason in reasons.items()]


def entries(quarantine: Iterable[Quarantined]) -> list[dict[str, Any]]:
    return [q.entry() for q in quarantine]


def quarantine_bytes(quarantine: Quarantined | Iterable[Quarantined]) -> bytes:
    """The bytes a quarantine file holds: one record, or a list of them."""
    if isinstance(quarantine, Quarantined):
        return json_bytes(quarantine.entry())
    return json_bytes(entries(quarantine))


def write_quarantine(store: Store, key: str,
                     quarantine: Quarantined | Iterable[Quarantined]) -> None:
    """Write a quarantine file (a list; or one record, as recognition's per page)."""
    store.write_bytes(key, quarantine_bytes(quarantine))


def read_quarantine(store: Store, key: str) -> list[Quarantined]:
    """The records of a quarantine file written by :func:`write_quarantine`."""
    data = store.read_json(key)
    return [Quarantined(**q) for q in (data if isinstance(data, list) else [data])]


def beside(out: str) -> str:
    """The quarantine file of a job's output file: ``preds/x.parquet`` ->
    ``preds/x.quarantine.json`` (an output with no extension keeps its name)."""
    head, _, name = out.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}{SUFFIX}" if head else f"{stem}{SUFFIX}"
