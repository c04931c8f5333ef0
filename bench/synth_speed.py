"""Speed of the synthetic book generator, in full-size pages per second on one core.

``python -m bench.synth_speed [--books 6 --pages-per-book 5]`` writes
``bench/results/synth.json``:

- ``end_to_end``: ``kzjobs.synth.generate`` from a cold process (font loading, glyph
  cache filling, files written to a local store), wall clock and CPU time;
- ``steady``: per-stage CPU time per page once the caches are warm (layout, paint,
  JPEG), on pages the end-to-end run did not make.

CPU time is reported beside wall time because the bench machine may be shared: the
pages/s per CPU second is the figure for one free core.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info, peak_rss_mb

OUT = Path(__file__).parent / "results" / "synth.json"


def end_to_end(books: int, pages_per_book: int, seed: int) -> dict[str, Any]:
    from kzjobs.core.store import open_store
    from kzjobs.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp)
        wall, cpu = time.perf_counter(), time.process_time()
        summary = generate(store, books=books, pages_per_book=pages_per_book, seed=seed)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sizes = [len(store.read_bytes(k)) for k in store.list("images")]
    pages = summary["pages"]
    return {
        "books": books,
        "pages": pages,
        "boxes_per_page": round(summary["boxes"] / pages, 1),
        "mean_jpeg_kb": round(sum(sizes) / len(sizes) / 1024, 1),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "pages_per_s_wall": round(pages / wall, 2),
        "pages_per_s_cpu": round(pages / cpu, 2),
    }


def steady(books: int, pages_per_book: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from kzjobs.synth import FONTS
    from kzjobs.synth.generator import _PAINT, _rng, book_style, page_layout
    from kzjobs.synth.paper import paint, to_jpeg
    from kzjobs.synth.vocab import load_vocabulary

    vocab = load_vocabulary()
    stages = {"layout": [], "paint": [], "jpeg": []}
    heights = []
    for b in range(books):
        style = book_style(seed, b, FONTS[b % len(FONTS)])
        for p in range(pages_per_book, 2 * pages_per_book):  # pages not made end to end
            t0 = time.process_time()
            layout = page_layout(style, vocab, seed, b, p)
            t1 = time.process_time()
            pixels = paint(layout, style, _rng(seed, b, _PAINT, p))
            t2 = time.process_time()
            to_jpeg(pixels, style)
            t3 = time.process_time()
            for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                stages[name].append(dt)
            heights.append(layout.height)
    per_page = {k: round(float(np.mean(v)) * 1000, 1) for k, v in stages.items()}
    total = sum(per_page.values())
    return {
        "pages": len(heights),
        "mean_height_px": round(float(np.mean(heights))),
        "cpu_ms_per_page": per_page | {"total": round(total, 1)},
        "pages_per_s_cpu": round(1000 / total, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=6)
    parser.add_argument("--pages-per-book", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = {
        "part": "synth",
        "end_to_end": end_to_end(args.books, args.pages_per_book, args.seed),
        "steady": steady(args.books, args.pages_per_book, args.seed),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
