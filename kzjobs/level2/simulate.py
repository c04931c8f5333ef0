"""Simulated classifier outputs with known structure, for tests and benchmarks.

No images are involved: pages are grids of character boxes with known codes, plus
false boxes (``seg_fp``) of two sorts, and each (kind, fold) "model" emits a top-k
for every box following a noise model whose structure is known, so a test can say
what a blend, a pseudolabel rule or level 2 should achieve:

- *easy* boxes: every model puts the true class first with a wide margin (and is
  confidently wrong with probability ``easy_error``);
- *hard* boxes: a kind is right with probability ``acc_good`` on the class range it
  knows well (``KindSpec.good``) and ``acc_bad`` elsewhere, with narrow margins; a
  louder kind (``scale`` > 1) can dominate a plain average without being better;
- *merged* false boxes span two characters of a column (``box_overlap`` = 1): models
  name the upper character, with ``seg_fp`` second or third;
- *noise* false boxes (seals, marks) stand apart: models mostly say ``seg_fp``.

:func:`unfamiliar_hand` turns a model's frame into its reading of a hand it was not
trained on: ``seg_fp`` first on characters it does not recognise; :func:`misread`, one
class read as another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kzjobs.data.books import assign_folds, book_id
from kzjobs.data.format import SEG_FP, Box


@dataclass(frozen=True)
class KindSpec:
    name: str
    good: tuple[float, float] = (0.0, 1.0)  # class range (fractions of the class list)
    acc_good: float = 0.9
    acc_bad: float = 0.5
    scale: float = 1.0


@dataclass
class Simulation:
    truth: dict[str, list[Box]]  # ground truth pages (train.csv)
    boxes: dict[str, list[Box]]  # detected boxes with their OOF code (seg_fp for false boxes)
    folds: dict[str, int]  # book -> fold
    info: pd.DataFrame  # per box: image_id, box_id, sort (char, merged, noise), easy
    frames: list[pd.DataFrame] = field(default_factory=list)  # every model on every box

    def oof(self) -> list[pd.DataFrame]:
        """Each (kind, fold) model's predictions on its own fold's books only."""
        out = []
        for f in self.frames:
            fold = int(f["fold"].iloc[0])
            books = f["image_id"].map(book_id).map(self.folds)
            out.append(f[books.to_numpy() == fold].reset_index(drop=True))
        return out


def codes(n_classes: int) -> list[str]:
    return [f"U+{0x4E00 + i:04X}" for i in range(n_classes)]


def simulate(
    *,
    books: int = 4,
    pages_per_book: int = 5,
    boxes_per_page: int = 60,
    n_classes: int = 100,
    kinds: tuple[KindSpec, ...] = (KindSpec("a"),),
    n_folds: int = 2,
    easy: float = 0.8,
    easy_error: float = 0.005,
    merged: float = 0.08,
    noise: float = 0.04,
    top_k: int = 5,
    seed: int = 0,
    book_prefix: str = "s",
) -> Simulation:
    """A :class:`Simulation` (see the module doc). Books are ``sa``, ``sb``...."""
    if top_k < 3:
        raise ValueError("top_k must be at least 3")
    rng = np.random.default_rng(seed)
    vocab = codes(n_classes)
    freq = 1.0 / np.arange(1, n_classes + 1) ** 0.7  # Zipf-like, as in real books
    freq /= freq.sum()
    truth: dict[str, list[Box]] = {}
    boxes: dict[str, list[Box]] = {}
    kinds_of_box: dict[tuple[str, int], tuple[str, int, bool]] = {}
    for b in range(books):
        book = book_prefix + _letters(b)
        for p in range(pages_per_book):
            image_id = f"{book}_{p:03d}"
            page, detected, meta = _page(rng, vocab, freq, boxes_per_page, easy, merged, noise)
            truth[image_id] = page
            order = rng.permutation(len(detected))  # box ids are not in reading order
            boxes[image_id] = [detected[i] for i in order]
            for new, old in enumerate(order):
                kinds_of_box[(image_id, new)] = meta[old]
    folds = assign_folds(truth, n_folds)
    info = pd.DataFrame([(i, b, sort, easy) for (i, b), (sort, _, easy) in kinds_of_box.items()],
                        columns=["image_id", "box_id", "sort", "easy"])
    sim = Simulation(truth=truth, boxes=boxes, folds=folds, info=info)
    for spec in kinds:
        for fold in range(n_folds):
            rows = []
            for image_id, page in boxes.items():
                for box_id, box in enumerate(page):
                    sort, first, is_easy = kinds_of_box[(image_id, box_id)]
                    classes, logits = _topk(rng, spec, vocab, sort, first, is_easy,
                                            easy_error, top_k)
                    rows.append((image_id, box_id, box.x, box.y, box.w, box.h, classes, logits))
            frame = pd.DataFrame(rows, columns=["image_id", "box_id", "x", "y", "w", "h",
                                                "classes", "logits"])
            frame = frame.astype({c: np.int32 for c in ("box_id", "x", "y", "w", "h")})
            sim.frames.append(frame.assign(kind=spec.name, fold=fold))
    return sim


def unfamiliar_hand(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """``frame`` as read in a hand the model was not trained on: on ``share`` of the
    character boxes ``seg_fp`` comes first, 0.5-3 logits ahead of what the model would
    have said. Every model given the same ``seed`` stumbles on the same boxes (the hand
    is what is strange); boxes with ``seg_fp`` listed already are left as they are."""
    rng = np.random.default_rng(seed)
    classes, logits = list(frame["classes"]), list(frame["logits"])
    for i in np.flatnonzero(rng.random(len(frame)) < share):
        if SEG_FP in classes[i]:
            continue
        lead = logits[i][0] + rng.uniform(0.5, 3.0)
        classes[i] = [SEG_FP, *classes[i][:-1]]
        logits[i] = np.array([lead, *logits[i][:-1]], np.float32)
    return frame.assign(classes=classes, logits=logits)


def misread(frame: pd.DataFrame, code: str, as_code: str, share: float, seed: int
            ) -> pd.DataFrame:
    """``frame`` as read in a hand whose ``code`` looks like ``as_code`` to the model: on
    ``share`` of the boxes it reads as ``code``, ``as_code`` comes first, 0.5-2 logits
    ahead, and ``code`` second. Every model given the same ``seed`` stumbles on the same
    boxes."""
    rng = np.random.default_rng(seed)
    classes, logits = list(frame["classes"]), list(frame["logits"])
    for i in np.flatnonzero(rng.random(len(frame)) < share):
        if classes[i][0] != code:
            continue
        rest = [(c, v) for c, v in zip(classes[i], logits[i], strict=True) if c != as_code]
        lead = logits[i][0] + rng.uniform(0.5, 2.0)
        kept = rest[:len(classes[i]) - 1]
        classes[i] = [as_code, *(c for c, _ in kept)]
        logits[i] = np.array([lead, *(v for _, v in kept)], np.float32)
    return frame.assign(classes=classes, logits=logits)


def _page(rng: np.random.Generator, vocab: list[str], freq: np.ndarray, n: int, easy: float,
          merged: float, noise: float) -> tuple[list[Box], list[Box], list[tuple[str, int, bool]]]:
    """GT boxes in columns (right to left), then detected boxes and how each was made."""
    rows_per_col = 12
    truth, detected, meta = [], [], []
    drawn = rng.choice(len(vocab), size=n, p=freq)
    for i, cls in enumerate(drawn):
        col, row = divmod(i, rows_per_col)
        w, h = rng.integers(40, 60, size=2)
        box = Box(vocab[cls], 1400 - col * 90, 60 + row * 75, int(w), int(h))
        truth.append(box)
        detected.append(box)
        meta.append(("char", int(cls), bool(rng.random() < easy)))
    for i in range(n):
        upper = truth[i]
        if (i + 1) % rows_per_col and i + 1 < n and rng.random() < merged:
            lower = truth[i + 1]  # one box over two characters of a column
            x0, y0 = min(upper.x, lower.x), upper.y
            x1 = max(upper.x + upper.w, lower.x + lower.w)
            detected.append(Box(SEG_FP, x0, y0, x1 - x0, lower.y + lower.h - y0))
            meta.append(("merged", int(drawn[i]), False))
    for _ in range(rng.binomial(n, noise)):
        x, y = int(rng.integers(0, 200)), int(rng.integers(60, 900))  # margin marks
        detected.append(Box(SEG_FP, x, y, int(rng.integers(30, 70)), int(rng.integers(30, 70))))
        meta.append(("noise", -1, bool(rng.random() < easy)))
    return truth, detected, meta


def _topk(rng: np.random.Generator, spec: KindSpec, vocab: list[str], sort: str, first: int,
          is_easy: bool, easy_error: float, k: int) -> tuple[list[str], np.ndarray]:
    n = len(vocab)
    true = SEG_FP if sort != "char" else vocab[first]
    if sort == "merged":
        head = [vocab[first]]
        # seg_fp second or third: the model half-knows the box is wrong
        tail = [SEG_FP] if rng.random() < 0.6 else [_other(rng, vocab, head), SEG_FP]
        ranked, margin = head + tail, rng.uniform(1.0, 4.0)
    else:
        if is_easy:
            right, margin = rng.random() >= easy_error, rng.uniform(6.0, 10.0)
        else:
            lo, hi = spec.good
            good = sort == "noise" or lo <= first / n < hi
            right = rng.random() < (spec.acc_good if good else spec.acc_bad)
            margin = rng.uniform(0.5, 3.0)
        if right:
            ranked = [true]
        else:
            wrong = _other(rng, vocab, [true])
            place = rng.choice(3, p=[0.6, 0.25, 0.15])  # true at rank 1, 2 or missing
            ranked = [wrong] + ([true] if place == 0 else
                                [_other(rng, vocab, [true, wrong]), true] if place == 1 else [])
    while len(ranked) < k:
        ranked.append(_other(rng, vocab, ranked))
    ranked = ranked[:k]
    top = rng.normal(12.0, 1.0)
    steps = np.concatenate([[0.0, margin], rng.uniform(0.5, 2.0, size=k - 2)])
    logits = ((top - np.cumsum(steps)) * spec.scale).astype(np.float32)
    return ranked, logits


def _letters(n: int) -> str:
    """0 -> a, 25 -> z, 26 -> ba: book ids made of letters only (see ``book_id``)."""
    out = ""
    while True:
        n, r = divmod(n, 26)
        out = chr(97 + r) + out
        if not n:
            return out


def _other(rng: np.random.Generator, vocab: list[str], taken: list[str]) -> str:
    while True:
        code = vocab[int(rng.integers(len(vocab)))]
        if code not in taken:
            return code
