"""Validation speed: GX per 100 items at several sizes, and a whole job on synthetic books.

    .venv/bin/python -m bench.validate          # writes bench/results/validate.json

GX runs over fact tables (one row per page, one per box), so its cost is measured on
tables of the real competition's shape (about 176 boxes per page) without images;
the job figure adds reading and decoding real-size synthetic pages, which dominates.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

BOXES_PER_PAGE = 176  # 683k boxes over 3,881 pages in the competition's train.csv
RESULTS = Path(__file__).parent / "results" / "validate.json"


def annotation_tables(pages: int, boxes_per_page: int = BOXES_PER_PAGE, seed: int = 0):
    """Fact tables shaped like ``annotation_facts`` output, all valid, without images."""
    import numpy as np

    from kzjobs.validate.facts import BOX_COLUMNS, IMAGE_COLUMNS, PAGE_COLUMNS, _frame

    rng = np.random.default_rng(seed)
    width, height = 3000, 4500
    page_rows = [
        {"row": r, "image_id": f"bk{r // 100}_{r % 100:03d}", "labels_error": None,
         "n_boxes": boxes_per_page, "file_bytes": 2_000_000, "format": "JPEG",
         "expected_format": "JPEG", "mode": "RGB", "width": width, "height": height,
         "pixels": width * height, "image_error": None}
        for r in range(pages)
    ]
    n = pages * boxes_per_page
    x, y = rng.integers(0, width - 100, n), rng.integers(0, height - 100, n)
    w, h = rng.integers(10, 100, n), rng.integers(10, 100, n)
    codes = [f"U+{c:04X}" for c in range(0x3042, 0x3042 + 80)]
    boxes = {
        "row": np.repeat(np.arange(pages), boxes_per_page),
        "position": np.tile(np.arange(boxes_per_page), pages),
        "code": rng.choice(codes, n), "x": x, "y": y, "w": w, "h": h, "x2": x + w, "y2": y + h,
        "width": width, "height": height,
    }
    import pandas as pd

    tables = {
        "pages": _frame(page_rows, PAGE_COLUMNS | {"n_boxes": "int64"} | IMAGE_COLUMNS),
        "boxes": pd.DataFrame(boxes).astype(BOX_COLUMNS),
    }
    params = {
        "id_pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", "modes": ["RGB", "L"],
        "min_side": 64, "max_side": 16000, "max_pixels": 80_000_000,
        "max_file_bytes": 50_000_000, "image_ids": [p["image_id"] for p in page_rows],
        "vocabulary": codes,
    }
    return tables, params


def bench_gx(sizes=(100, 1000, 4000)) -> dict:
    from kzjobs.validate.expectations import import_gx, run_suites

    start = time.perf_counter()
    import_gx()
    out = {"gx_import_seconds": round(time.perf_counter() - start, 2), "annotations": []}
    run_suites("annotations", *annotation_tables(10))  # warm-up: first context, first batch
    for pages in sizes:
        tables, params = annotation_tables(pages)
        start = time.perf_counter()
        outcomes = run_suites("annotations", tables, params)
        seconds = time.perf_counter() - start
        assert all(o.success for o in outcomes)
        out["annotations"].append({
            "pages": pages, "boxes": len(tables["boxes"]), "gx_seconds": round(seconds, 3),
            "gx_seconds_per_100_pages": round(100 * seconds / pages, 3),
        })
    return out


def bench_job(books: int = 3, pages_per_book: int = 4) -> dict:
    from kzjobs.core.store import open_store
    from kzjobs.data.format import boxes_to_points, read_annotations, write_submission
    from kzjobs.synth import generate
    from kzjobs.validate.job import ValidateJob

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = open_store(Path(tmp) / "d")
        generate(data, books=books, pages_per_book=pages_per_book, seed=0)
        truth = read_annotations(data.read_bytes("train.csv"))
        data.write_bytes("submission.csv", write_submission(boxes_to_points(truth)))
        for kind in ("annotations", "batch", "predictions"):
            job = ValidateJob(store_uri=str(Path(tmp) / "s"), dataset=str(Path(tmp) / "d"),
                              kind=kind, predictions=str(Path(tmp) / "d" / "submission.csv"),
                              profile_name="tiny")
            summary = job.run()
            assert summary["quarantined"] == 0
            items = summary["items"]
            out[kind] = {
                "items": items, "rows": summary["tables"], "seconds": summary["seconds"],
                "facts_seconds_per_100_items": round(100 * summary["seconds"]["facts"] / items, 2),
                "gx_seconds_per_100_items": round(100 * summary["seconds"]["gx"] / items, 2),
            }
    return out


def main() -> None:
    from bench.machine import machine_info

    result = {"gx": bench_gx(), "job_on_synthetic_pages": bench_job(), "machine": machine_info()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
