"""What the library inputs and outputs cost, a page at a time, on synthetic pages.

``python -m bench.formats [--pages 8]`` writes ``bench/results/formats.json``:

- inputs: a page image decoded (JPEG), and a page of a PDF of the same scans rasterised
  by PDFium at 200 and 300 DPI (``KZ_PDF_DPI``), each through the collection reader;
- outputs: each library format (``--formats``) written for the pages, seconds and
  bytes a page. The pages' results are their ground truth (every character, boxes in
  reading order), so the writers see real character counts; no model runs.

Nothing here is asserted: tests/export and tests/data check what the files say.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info

OUT = Path(__file__).parent / "results" / "formats.json"


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def measure(pages: int, workdir: Path) -> dict[str, Any]:
    from PIL import Image

    from kzjobs.core.settings import get_settings
    from kzjobs.core.store import open_store
    from kzjobs.data.collection import Collection
    from kzjobs.data.dataset import Dataset
    from kzjobs.export import FORMATS
    from kzjobs.export.write import write_formats
    from kzjobs.recognize.outputs import Char, PageResult, page_key
    from kzjobs.synth import generate

    store = open_store(workdir)
    generate(store.child("coll"), books=1, pages_per_book=pages, seed=0,
             fonts=["kouzan-gyousyo"], labelled=True)
    data = Dataset.open("coll", store)
    ids = data.image_ids()
    characters = 0
    for image_id in ids:
        image = data.read_image(image_id)
        boxes = data.annotations[image_id]
        characters += len(boxes)
        result = PageResult(image_id, image.width, image.height,
                            [Char(b.code, b.x, b.y, b.w, b.h, 0.9) for b in boxes])
        store.write_json(f"out/{page_key(image_id)}", result.to_json())

    # Inputs: the same scans as JPEG pages and as one PDF (at the scans' 300 DPI).
    scans = workdir / "coll" / "images"
    images = [Image.open(scans / f"{i}.jpg").convert("RGB") for i in ids]
    pdf = workdir / "book.pdf"
    images[0].save(pdf, save_all=True, append_images=images[1:], resolution=300.0)
    inputs: dict[str, Any] = {}
    folder = Collection.folder(str(scans))
    seconds = sum(_timed(folder.read, ref)[0] for ref in folder.scan.pages)
    inputs["jpeg"] = {"s_per_page": round(seconds / pages, 3),
                      "size": list(images[0].size)}
    for dpi in (200, 300):
        coll = Collection.folder(str(pdf), settings=get_settings().model_copy(
            update={"pdf_dpi": dpi}))
        refs = coll.scan.pages
        timings = [_timed(coll.read, ref) for ref in refs]
        coll.close()
        inputs[f"pdf_{dpi}dpi"] = {"s_per_page": round(sum(t for t, _ in timings) / len(refs), 3),
                                  "size": list(timings[0][1].size)}

    outputs: dict[str, Any] = {}
    out = store.child("out")
    for fmt in FORMATS:
        seconds, _ = _timed(lambda f=fmt: write_formats(out, ids, f, read_image=data.read_image))
        size = sum(p.stat().st_size for p in (workdir / "out" / fmt).rglob("*") if p.is_file())
        outputs[fmt] = {"s_per_page": round(seconds / pages, 3),
                        "kb_per_page": round(size / 1024 / pages, 1)}
    return {"pages": pages, "characters_per_page": round(characters / pages, 1),
            "inputs": inputs, "outputs": outputs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"part": "formats",
                  "command": f"python -m bench.formats --pages {args.pages}",
                  **measure(args.pages, Path(tmp)),
                  # other work on the machine slows every figure: say how much there was
                  "load_average_1m": round(os.getloadavg()[0], 1), "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
