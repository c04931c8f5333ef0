"""The validation job: facts per item, GX suites over them, a report and a quarantine.

Writes under ``out``:

- ``quarantine.json``: ``[{"item", "row" | "key", "reason", "stage"}]``, one entry per bad
  item (:class:`kzjobs.core.quarantine.Quarantined`);
- ``passed.json``: the ids that passed, in input order, for the next stage to read;
- ``report.json`` (last): counts (``items == passed + quarantined``), one entry per
  expectation with its failures, the reasons by count, and the time spent.

An item is a page: a train.csv row, an image file of a batch, a submission row. A
page with one bad box or point is quarantined whole, with the box's position in the
reason: a training page with a wrong label must not train, and a prediction row that
breaks the format would break the submission. Duplicate ids quarantine every copy:
nothing says which one is right.

The job fails (:class:`UnusableInput`) only when the input as a whole cannot be judged:
a CSV with the wrong columns, not UTF-8, not a CSV, a missing file, an empty collection.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from typing import Annotated, Any, Literal

from pydantic import Field

from kzjobs.core.job import Cli, Job
from kzjobs.core.quarantine import Quarantined, write_quarantine
from kzjobs.core.store import Store, join, read_uri
from kzjobs.data.collection import Collection
from kzjobs.data.dataset import Dataset
from kzjobs.validate.expectations import Outcome
from kzjobs.validate.facts import (
    Facts,
    UnusableInput,
    annotation_facts,
    batch_facts,
    prediction_facts,
    read_vocabulary,
)

Kind = Literal["annotations", "batch", "predictions"]
# At most this many boxes are named per page and expectation; the rest are counted.
MAX_NAMED = 3


def _is_path(ref: str) -> bool:
    return "://" in ref or ref.startswith(("/", ".", "~"))


def read_ref(ref: str, store: Store) -> bytes:
    """A file named by a store key, or by a path/URI of its own (like ``Dataset.open``)."""
    try:
        return read_uri(ref) if _is_path(ref) else store.read_bytes(ref)
    except (KeyError, FileNotFoundError):
        raise UnusableInput(f"no such file: {ref}") from None


def _detail(entry: dict[str, Any], skip: tuple[str, ...]) -> str:
    # An *_error column holds a message already; other columns read as name=value.
    return ", ".join(
        str(v) if k.endswith("_error") else f"{k}={v}" for k, v in entry.items() if k not in skip
    )


def quarantine_reasons(outcomes: list[Outcome]) -> dict[int, list[str]]:
    """``{page row: [reason, ...]}`` from the failing rows of every expectation."""
    reasons: dict[int, list[str]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.table == "pages":
            for entry in outcome.unexpected:
                reasons[entry["row"]].append(
                    f"{outcome.reason} ({_detail(entry, ('row',))})"
                )
            continue
        what = "box" if outcome.table == "boxes" else "point"
        by_row: dict[int, list[str]] = defaultdict(list)
        for entry in outcome.unexpected:
            by_row[entry["row"]].append(
                f"{what} {entry['position']}: {_detail(entry, ('row', 'position'))}"
            )
        for row, parts in by_row.items():
            more = f" and {len(parts) - MAX_NAMED} more" if len(parts) > MAX_NAMED else ""
            reasons[row].append(f"{outcome.reason} ({'; '.join(parts[:MAX_NAMED])}{more})")
    return reasons


def _slug(ref: str) -> str:
    name = ref.rstrip("/").rsplit("/", 1)[-1].removesuffix(".csv")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "input"


class ValidateJob(Job):
    """Validate a dataset's annotations, an incoming batch, or a predictions CSV."""

    dataset: Annotated[str, Cli(argument=True)] = Field(
        description="Dataset key in the store, or a path/URI.")
    kind: Kind = Field("annotations", description="What is validated (the sub-command).")
    out: str = Field("", description="Store prefix for report.json, quarantine.json, "
                     "passed.json (default: validation/<kind>/<name>).")
    predictions: str = Field("", description="Submission CSV: store key or path/URI "
                             "(kind predictions).")
    vocabulary: str = Field("", description="unicode_translation.csv (key or path); default: "
                            "the dataset's (kind predictions).")

    def out_prefix(self) -> str:
        if self.out:
            return join(self.out)
        named = self.predictions if self.kind == "predictions" else self.dataset
        return join("validation", self.kind, _slug(named))

    def facts(self) -> Facts:
        config = self.profile.validation
        if self.kind == "batch":  # a folder, store key, s3:// URI or IIIF manifest URL
            return batch_facts(Collection.open(self.dataset, self.store, settings=self.settings,
                                               max_pixels=config.max_pixels), config)
        ds = Dataset.open(self.dataset, self.store)
        if self.kind == "annotations":
            return annotation_facts(ds.store, config)
        if not self.predictions:
            raise UnusableInput("kind=predictions needs the predictions CSV")
        if self.vocabulary:
            vocab_data = read_ref(self.vocabulary, self.store)
        elif ds.store.exists("unicode_translation.csv"):
            vocab_data = ds.store.read_bytes("unicode_translation.csv")
        else:
            raise UnusableInput(
                f"no unicode_translation.csv in {ds.uri}: pass the model's vocabulary"
            )
        vocabulary = read_vocabulary(vocab_data, self.vocabulary or "unicode_translation.csv")
        submission = read_ref(self.predictions, self.store)
        return prediction_facts(ds.store, submission, vocabulary, config)

    def run(self) -> dict[str, Any]:
        from kzjobs.validate.expectations import import_gx, run_suites

        out = self.out_prefix()
        seconds = {}
        start = time.perf_counter()
        facts = self.facts()
        seconds["facts"] = time.perf_counter() - start
        start = time.perf_counter()
        import_gx()  # timed apart: a one-off per process, a few seconds
        seconds["gx_import"] = time.perf_counter() - start
        start = time.perf_counter()
        outcomes = run_suites(self.kind, facts.tables, facts.params)
        seconds["gx"] = time.perf_counter() - start

        reasons = quarantine_reasons(outcomes)
        pages = facts.tables["pages"]
        where = "key" if "key" in pages.columns else "row"
        quarantine: list[Quarantined] = []
        passed: list[str] = []
        for page in pages.itertuples(index=False):
            if page.row in reasons:
                quarantine.append(Quarantined(
                    item=page.image_id, **{where: getattr(page, where)},
                    reason="; ".join(reasons[page.row]), stage="validate"))
            else:
                passed.append(page.image_id)
        rows_by_reason: dict[str, set[int]] = defaultdict(set)
        for o in outcomes:
            rows_by_reason[o.reason].update(u["row"] for u in o.unexpected)
        by_reason = Counter({r: len(rows) for r, rows in rows_by_reason.items() if rows})
        report = {
            "kind": self.kind,
            "dataset": self.dataset,
            "predictions": self.predictions if self.kind == "predictions" else None,
            "out": out,
            "items": len(pages),
            "passed": len(passed),
            "quarantined": len(quarantine),
            "success": not quarantine,
            "tables": {name: len(frame) for name, frame in facts.tables.items()},
            "reasons": dict(by_reason.most_common()),
            "expectations": [o.stats() for o in outcomes],
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            **facts.extra,
        }
        write_quarantine(self.store, join(out, "quarantine.json"), quarantine)
        self.store.write_json(join(out, "passed.json"), passed)
        self.store.write_json(join(out, "report.json"), report)  # last: marks the job done
        return {k: v for k, v in report.items() if k != "expectations"}
