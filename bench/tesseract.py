"""Tesseract baseline: Japanese vertical OCR scored with the competition F1, beside ours.

    .venv/bin/python -m bench.tesseract --dataset PATH [--out bench/results/tesseract.json]
        [--psm 12] [--compare-psm 3 4 5 6 11] [--spread word|line] [--threads 1]

Runs the ``tesseract`` binary (Debian ``tesseract-ocr-jpn-vert``, installed by
``make bench-packages``) once per page with TSV output, takes the word rows (level 5)
and spreads each word's characters evenly down its box: tesseract gives no per-character
boxes in TSV, and a vertical word's characters sit one under the other. The same output
is also scored with each *line's* characters spread down the line box (``spreads.line``):
tesseract's vertical word boxes lag the glyphs (see ``parse_lines``). Every character
it reads is kept, including ones outside the dataset's vocabulary: those are false
positives, as any OCR output's would be (the count is reported as
``out_of_vocabulary``).

Cost is measured per child: CPU time with ``os.wait4`` (the per-process form of
``getrusage(RUSAGE_CHILDREN)``, which would mix in a caller's other children) and peak RSS
from the child's ``VmHWM`` (``wait4`` would report the size of a big caller such as the
end-to-end benchmark, which Linux carries over exec).
``OMP_THREAD_LIMIT=1`` by default: the Debian build uses OpenMP, whose second thread on
a 2-core machine roughly tripled CPU time per page here for no wall-clock gain.

``run_tesseract_bench(dataset, image_ids)`` is the entry point the end-to-end
benchmark calls so that ours and tesseract run on the same pages in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.machine import wait_child
from kzjobs.data.format import MAX_PREDICTIONS_PER_PAGE, Point, char_to_code

if TYPE_CHECKING:
    from PIL import Image

    from kzjobs.data.dataset import Dataset

OUT = Path(__file__).parent / "results" / "tesseract.json"
TSV_COLUMNS = (
    "level", "page_num", "block_num", "par_num", "line_num", "word_num",
    "left", "top", "width", "height", "conf", "text",
)
LINE_LEVEL, WORD_LEVEL = 4, 5
SPREADS = ("word", "line")
# Page segmentation mode 12 (sparse text with OSD) had the best F1 of 3, 4, 5, 6, 11, 12
# on synthetic mincho + brush pages (bench/results/tesseract.json, "psm_sweep"), tied
# with 3 on a second set; 5 (one uniform vertical block) lost most on pages with
# frames and glosses (detection F1 0.41 against 0.70 on 4 books x 3 pages, seed 11).
DEFAULT_PSM = 12
DEFAULT_LANG = "jpn_vert"
TIMEOUT_S = 300.0


class TesseractError(RuntimeError):
    """Tesseract failed on one page; ``reason`` says why (quarantined, the rest goes on)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Word:
    """A row of tesseract's TSV: a word's (or a whole line's) box, confidence and text."""

    left: int
    top: int
    width: int
    height: int
    conf: float
    text: str
    line: tuple[int, int, int, int] = (0, 0, 0, 0)  # page, block, paragraph, line


def _rows(text: str) -> list[tuple[int, Word]]:
    """(level, row) for every TSV row. Split on tabs by hand, not with ``csv``: tesseract
    does not quote, so a recognised ``"`` would otherwise open a quoted field."""
    lines = text.splitlines()
    if not lines:
        return []
    if tuple(lines[0].split("\t")) != TSV_COLUMNS:
        raise TesseractError(f"unexpected TSV header {lines[0]!r}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t", len(TSV_COLUMNS) - 1)
        if len(fields) != len(TSV_COLUMNS):
            raise TesseractError(f"TSV line {n}: {len(fields)} fields, not {len(TSV_COLUMNS)}")
        try:
            level, page, block, par, line_num = map(int, fields[:5])
            box = [int(v) for v in fields[6:10]]
            conf = float(fields[10])
        except ValueError as err:
            raise TesseractError(f"TSV line {n}: {err}") from None
        rows.append((level, Word(*box, conf, fields[11], (page, block, par, line_num))))
    return rows


def parse_tsv(text: str) -> list[Word]:
    """The word rows (level 5) of ``tesseract ... tsv`` output that have text, in order."""
    return [w for level, w in _rows(text) if level == WORD_LEVEL and w.text.strip()]


def parse_lines(text: str) -> list[Word]:
    """The text lines (level 4) with their words' text joined and mean confidence.

    Tesseract's *word* boxes are unreliable with vertical models (they lag the glyphs by
    about half a character; tesseract-ocr/tesseract#2679) while its line boxes fit the
    ink, so spreading a column's characters down its line box is the fairer baseline.
    """
    rows = _rows(text)
    words: dict[tuple[int, int, int, int], list[Word]] = {}
    for level, w in rows:
        if level == WORD_LEVEL and w.text.strip():
            words.setdefault(w.line, []).append(w)
    out = []
    for level, row in rows:
        if level == LINE_LEVEL and row.line in words:
            ws = words[row.line]
            text = "".join(w.text for w in ws)
            out.append(replace(row, text=text, conf=sum(w.conf for w in ws) / len(ws)))
    return out


def spread_word(word: Word) -> list[Point]:
    """One point per non-space character, evenly down the word's box (vertical text).

    The i-th of n characters gets (left + w/2, top + (i + 0.5) * h / n).
    """
    chars = [c for c in word.text if not c.isspace()]
    n = len(chars)
    x = word.left + word.width / 2
    return [
        Point(char_to_code(c), x, word.top + (i + 0.5) * word.height / n)
        for i, c in enumerate(chars)
    ]


def words_to_points(words: Iterable[Word]) -> list[Point]:
    return [p for w in words for p in spread_word(w)]


def tesseract_command(source: str, *, lang: str, psm: int) -> list[str]:
    return ["tesseract", source, "stdout", "-l", lang, "--psm", str(psm), "tsv"]


def _image_file(image: Image.Image | str | os.PathLike | bytes, tmp: str) -> str:
    """A path tesseract can read: paths as they are, bytes and PIL images via a temp file."""
    if isinstance(image, str | os.PathLike):
        return os.fspath(image)
    if isinstance(image, bytes):
        path = os.path.join(tmp, "page.img")  # leptonica sniffs the format from the bytes
        with open(path, "wb") as fh:
            fh.write(image)
    else:
        path = os.path.join(tmp, "page.png")
        image.save(path, format="PNG")
    return path


def run_tesseract(
    image: Image.Image | str | os.PathLike | bytes,
    *,
    lang: str = DEFAULT_LANG,
    psm: int = DEFAULT_PSM,
    threads: int | None = 1,
    timeout: float = TIMEOUT_S,
) -> tuple[str, Any, int]:
    """Run the binary on one page; returns (TSV text, the child's ``resource.struct_rusage``,
    its peak RSS in KiB read from ``VmHWM``: wait4's ``ru_maxrss`` carries a big parent's
    size over exec).

    Raises ``TesseractError`` when the binary is missing, fails, or times out.
    """
    if shutil.which("tesseract") is None:
        raise TesseractError(
            "the tesseract binary is not installed: run `make bench-packages` "
            "(apt-get install tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert)"
        )
    env = dict(os.environ)
    if threads is not None:
        env["OMP_THREAD_LIMIT"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="kz-tess-") as tmp:
        source = _image_file(image, tmp)
        with open(os.path.join(tmp, "out"), "w+b") as out, open(
            os.path.join(tmp, "err"), "w+b"
        ) as err:
            proc = subprocess.Popen(
                tesseract_command(source, lang=lang, psm=psm),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
            )
            # Output goes to files, so nothing blocks while we reap the child with
            # wait4 (subprocess's own wait discards the child's rusage).
            status, usage, peak_kb = _wait(proc, timeout)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    if status != 0:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise TesseractError(f"tesseract exited with {status}: {' | '.join(tail)}")
    return stdout.decode("utf-8", "replace"), usage, peak_kb


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int, Any, int]:
    try:
        return wait_child(proc, timeout)
    except TimeoutError:
        raise TesseractError(f"tesseract timed out after {timeout:.0f} s") from None


def _cap(points: list[Point], words: Sequence[Word]) -> list[Point]:
    """At most MAX_PREDICTIONS_PER_PAGE points, the most confident words' first."""
    if len(points) <= MAX_PREDICTIONS_PER_PAGE:
        return points
    ranked = sorted(words, key=lambda w: -w.conf)
    return words_to_points(ranked)[:MAX_PREDICTIONS_PER_PAGE]


def _units(tsv: str, spread: str) -> list[Word]:
    return parse_tsv(tsv) if spread == "word" else parse_lines(tsv)


def recognize_tesseract(
    image: Image.Image | str | os.PathLike | bytes,
    lang: str = DEFAULT_LANG,
    psm: int = DEFAULT_PSM,
    *,
    spread: str = "word",
    threads: int | None = 1,
) -> list[Point]:
    """Tesseract's characters on one page as competition points (code point + centre).

    ``spread="word"`` spreads each word's characters down its TSV box; ``"line"`` down
    its line's box (see ``parse_lines``). At most MAX_PREDICTIONS_PER_PAGE points.
    """
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {', '.join(SPREADS)}, not {spread!r}")
    tsv, _, _ = run_tesseract(image, lang=lang, psm=psm, threads=threads)
    units = _units(tsv, spread)
    return _cap(words_to_points(units), units)


def run_tesseract_bench(
    dataset: Dataset,
    image_ids: Sequence[str],
    *,
    lang: str = DEFAULT_LANG,
    psm: int = DEFAULT_PSM,
    spread: str = "word",
    threads: int | None = 1,
    submission: str | os.PathLike | None = None,
) -> dict:
    """Tesseract over ``image_ids`` of a labelled dataset: F1 (code and detection-only,
    overall and per book), pages/s and the peak memory of the tesseract processes.

    ``f1``/``detection_f1`` are for ``spread``; ``spreads`` scores both spreads of the
    same tesseract output (no extra runs). A page tesseract fails on is listed under
    ``failed`` with its reason and scored as predicting nothing; the rest go on.
    ``submission`` writes the ``spread`` predictions as a CSV.
    """
    from kzjobs.data.format import write_submission
    from kzjobs.method.metric import score

    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {', '.join(SPREADS)}, not {spread!r}")
    preds: dict[str, dict[str, list[Point]]] = {s: {} for s in SPREADS}
    failed: dict[str, str] = {}
    cpu_s = 0.0
    peak_kb = 0
    capped = 0
    start = time.perf_counter()
    for image_id in image_ids:
        try:
            data = dataset.store.read_bytes(dataset.image_keys[image_id])
            tsv, usage, page_peak_kb = run_tesseract(data, lang=lang, psm=psm, threads=threads)
            units = {s: _units(tsv, s) for s in SPREADS}
        except (KeyError, OSError, TesseractError) as err:
            failed[image_id] = getattr(err, "reason", None) or str(err)
            for s in SPREADS:
                preds[s][image_id] = []
            continue
        for s, words in units.items():
            points = words_to_points(words)
            capped += s == spread and len(points) > MAX_PREDICTIONS_PER_PAGE
            preds[s][image_id] = _cap(points, words)
        cpu_s += usage.ru_utime + usage.ru_stime
        peak_kb = max(peak_kb, page_peak_kb)
    wall_s = time.perf_counter() - start

    if submission is not None:
        Path(submission).parent.mkdir(parents=True, exist_ok=True)
        Path(submission).write_bytes(write_submission(preds[spread]))
    truth = {i: dataset.annotations[i] for i in image_ids}
    vocab = dataset.vocabulary
    chosen = preds[spread]
    pages = len(image_ids)
    ok = pages - len(failed)
    return {
        "lang": lang,
        "psm": psm,
        "spread": spread,
        "omp_thread_limit": threads,
        "tesseract_command": shlex.join(tesseract_command("PAGE", lang=lang, psm=psm)),
        "pages": pages,
        "f1": score(truth, chosen).as_dict(by_book=True),
        "detection_f1": score(truth, chosen, ignore_code=True).as_dict(by_book=True),
        "spreads": {
            s: {
                "f1": score(truth, p).as_dict(by_book=True),
                "detection_f1": score(truth, p, ignore_code=True).as_dict(by_book=True),
            }
            for s, p in preds.items()
        },
        "points": sum(len(p) for p in chosen.values()),
        # Kept as predictions (false positives), as any OCR output's would be.
        "out_of_vocabulary": sum(p.code not in vocab for v in chosen.values() for p in v),
        "capped_pages": capped,
        "failed": failed,
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "pages_per_s_wall": round(pages / wall_s, 3) if wall_s else None,
        # Pages per CPU second: the figure for one free core on a shared machine.
        "pages_per_s_cpu": round(ok / cpu_s, 3) if cpu_s else None,
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def tesseract_version() -> str | None:
    try:
        out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else None


def _summary(result: dict) -> str:
    figures = "  ".join(
        f"{s}: F1 {v['f1']['f1']:.4f} det {v['detection_f1']['f1']:.4f}"
        for s, v in result["spreads"].items()
    )
    return (
        f"psm {result['psm']}: {figures}  "
        f"{result['pages_per_s_cpu']} pages/CPU-s  {result['pages_per_s_wall']} pages/s wall"
    )


def main(argv: Sequence[str] | None = None) -> None:
    from bench.machine import machine_info, peak_rss_mb
    from kzjobs.data.dataset import Dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="labelled dataset: folder or URI")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--submission", type=Path, help="CSV (default: beside --out)")
    parser.add_argument("--lang", default=DEFAULT_LANG)
    parser.add_argument("--psm", type=int, default=DEFAULT_PSM)
    parser.add_argument("--compare-psm", type=int, nargs="*", default=[],
                        help="other page segmentation modes to score on the same pages")
    parser.add_argument("--spread", choices=SPREADS, default="word",
                        help="spread characters down word boxes (the issue's ask) or line boxes")
    parser.add_argument("--threads", type=int, default=1, help="OMP_THREAD_LIMIT (0: unset)")
    parser.add_argument("--limit", type=int, help="first N pages only")
    args = parser.parse_args(argv)

    dataset = Dataset.open(args.dataset)
    if not dataset.labelled:
        parser.error(f"{args.dataset} has no train.csv: the baseline needs labels to score")
    image_ids = dataset.image_ids()[: args.limit]
    threads = args.threads or None
    submission = args.submission or args.out.with_suffix(".csv")
    main_run = run_tesseract_bench(
        dataset, image_ids, lang=args.lang, psm=args.psm, spread=args.spread,
        threads=threads, submission=submission,
    )
    print(_summary(main_run), file=sys.stderr)
    sweep = {}
    for psm in args.compare_psm:
        if psm == args.psm:
            continue
        run = run_tesseract_bench(dataset, image_ids, lang=args.lang, psm=psm, threads=threads)
        print(_summary(run), file=sys.stderr)
        sweep[str(psm)] = {
            "pages_per_s_cpu": run["pages_per_s_cpu"],
            "failed": len(run["failed"]),
            **{f"{s}_{k}": run["spreads"][s][k]["f1"]
               for s in SPREADS for k in ("f1", "detection_f1")},
        }
    result = {
        "part": "tesseract",
        "command": shlex.join([Path(sys.executable).name, "-m", "bench.tesseract",
                               *(argv if argv is not None else sys.argv[1:])]),
        "dataset": dataset.uri,
        "books": _books(dataset),
        "tesseract": tesseract_version(),
        **main_run,
        "submission": str(submission),
        "psm_sweep": sweep,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "bench_peak_rss_mb": round(peak_rss_mb()),
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


def _books(dataset: Dataset) -> dict | None:
    """The synthetic generator's ``books.json`` (font per book), when there is one."""
    if not dataset.store.exists("books.json"):
        return None
    return {b: v.get("font") for b, v in dataset.store.read_json("books.json").items()}


if __name__ == "__main__":
    main()
