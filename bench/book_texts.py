"""How the synthetic books' texts differ, and how much of the vocabulary each font draws.

``python -m bench.book_texts [--books 8 --pages 40]`` writes
``bench/results/book_texts.json``:

- ``vocabulary``: the class count and where the classes come from;
- ``coverage``: per font, its set (train, dev, test) and how many of the classes it draws;
- ``texts``: for ``per_book`` and ``shared`` texts, books of ``--pages`` pages laid out
  (not painted) in one font that draws every class: the mean Jaccard index of two books'
  kanji sets, the mean total variation distance between two books' kanji frequencies
  (0: the same, 1: no kanji in common; the shared text's is sampling noise alone), how
  many of a book's 50 commonest kanji another book's 50 commonest hold, the share of the
  kanji seen that only one book uses, and each book's kana and katakana shares.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info

OUT = Path(__file__).parent / "results" / "book_texts.json"


def coverage() -> dict[str, Any]:
    from kzjobs.synth.fonts import FONT_SPLIT, FONTS
    from kzjobs.synth.fonts import coverage as drawn
    from kzjobs.synth.vocab import vocabulary

    chars = vocabulary()
    return {font: {"set": FONT_SPLIT.set_of(font), "draws": len(drawn(font, chars)),
                   "of": len(chars)} for font in FONTS}


def texts(mode: str, books: int, pages: int, font: str, seed: int) -> dict[str, Any]:
    from kzjobs.data.format import code_to_char
    from kzjobs.synth.generator import book_style, page_layout, text_of_book
    from kzjobs.synth.vocab import load_vocabulary

    vocab = load_vocabulary()
    kanji_sets, counts, rows = [], [], []
    for book in range(books):
        style = book_style(seed, book, font)
        text = text_of_book(style, vocab, seed, book) if mode == "per_book" else None
        chars = [code_to_char(b.code) for p in range(pages)
                 for b in page_layout(style, vocab, seed, book, p, distractors=False,
                                      text=text).boxes]
        kanji = [c for c in chars if c not in vocab.kana]
        kanji_sets.append(set(kanji))
        counts.append(Counter(kanji))
        rows.append({"characters": len(chars), "kanji_types": len(set(kanji)),
                     "kana_share": round(1 - len(kanji) / len(chars), 3),
                     "style_kana_share": round(style.kana_share, 3),
                     "katakana_share": round(sum("\u30a1" <= c <= "\u30ff" for c in chars)
                                             / len(chars), 3)})
    pairs = [len(a & b) / len(a | b) for a, b in itertools.combinations(kanji_sets, 2)]
    tvd, top = [], []
    for a, b in itertools.combinations(counts, 2):
        na, nb = sum(a.values()), sum(b.values())
        tvd.append(0.5 * sum(abs(a[c] / na - b[c] / nb) for c in set(a) | set(b)))
        top.append(len({c for c, _ in a.most_common(50)} & {c for c, _ in b.most_common(50)}))
    seen = set().union(*kanji_sets)
    once = [c for c in seen if sum(c in s for s in kanji_sets) == 1]
    return {"font": font, "books": books, "pages_per_book": pages,
            "kanji_jaccard_mean": round(float(np.mean(pairs)), 3),
            "kanji_jaccard_range": [round(min(pairs), 3), round(max(pairs), 3)],
            "kanji_tvd_mean": round(float(np.mean(tvd)), 3),
            "top50_kanji_shared_mean": round(float(np.mean(top)), 1),
            "kanji_seen": len(seen), "kanji_in_one_book_only": len(once),
            "share_in_one_book_only": round(len(once) / len(seen), 3), "by_book": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=int, default=8)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--font", default="hanazono", help="A font that draws every class.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from kzjobs.synth.vocab import load_vocabulary

    vocab = load_vocabulary()
    result = {
        "command": "python -m bench.book_texts " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": machine_info(),
        "vocabulary": {"classes": len(vocab), "kana": len(vocab.kana),
                       "kanji": len(vocab) - len(vocab.kana)},
        "coverage": coverage(),
        "texts": {mode: texts(mode, args.books, args.pages, args.font, args.seed)
                  for mode in ("per_book", "shared")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps({m: {k: v for k, v in t.items() if k != "by_book"}
                      for m, t in result["texts"].items()}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
