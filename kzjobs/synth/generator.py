"""Write synthetic books in the competition's layout.

``train.csv``, ``unicode_translation.csv`` (the whole vocabulary), ``books.json``
(book -> font and style, so benchmarks can hold out fonts) and ``images/<id>.jpg``;
an unlabelled collection gets the images only.

Names. Image ids are ``<book>_<page:03d>``. A book's name is letters only, because
``kzjobs.data.books.book_id`` keeps the leading letters of an id: ``<prefix><BOOK>``,
where the prefix is lower case and defaults to ``syn`` + the seed in letters
(seed 0 -> ``syna``, 1 -> ``synb``, 26 -> ``synaa``) and the book part is upper case
from ``start_book`` on (``A``, ``B``, ... ``Z``, ``AA``). The case change keeps every
name unambiguous, so collections made with different seeds, a different
``book_prefix`` or a later ``start_book`` never share a book: generate an incoming
collection with another seed (or ``start_book`` past the training books).

Text. ``text="per_book"`` (the default) gives each book its own text, words drawn with a
topic of its own (``synth.text``); ``"shared"`` draws every book's characters from one
frequency list (the old books, kept for unit tests).

Determinism. Book ``g`` (= ``start_book`` + i) takes its style from
``SeedSequence([seed, g, 0, 0])`` and its text from ``[seed, g, 3, 0]``; its page ``p``
is laid out from ``[seed, g, 1, p]`` and painted from ``[seed, g, 2, p]``. Pages do not
depend on each other (they could be made in parallel), and the same arguments give the
same bytes.

Re-runs. Each JPEG carries a comment naming what made it; a page whose image is already
there with the same comment is not painted again (its layout, which is cheap, is
recomputed for train.csv). So a run that crashed redoes only the missing pages.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from kzjobs.core.store import Store
from kzjobs.data.format import write_annotations, write_translation
from kzjobs.synth.fonts import FONTS, font_path, font_spec
from kzjobs.synth.paper import paint, to_jpeg
from kzjobs.synth.render import PageLayout, font_chars, is_cursive, layout_page
from kzjobs.synth.style import BookStyle, sample_style
from kzjobs.synth.text import BookText, TextMode, book_text
from kzjobs.synth.vocab import Vocabulary, load_vocabulary

GENERATOR_VERSION = 2  # 2: per-book texts, 3,119 code points
_STYLE, _LAYOUT, _PAINT, _TEXT = 0, 1, 2, 3  # independent random streams
_PREFIX = re.compile(r"^[a-z]+$")


def letters(n: int) -> str:
    """Bijective base 26: 0 -> a, 25 -> z, 26 -> aa, ..."""
    if n < 0:
        raise ValueError("must be >= 0")
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(ord("a") + r) + out
    return out


def book_name(prefix: str, index: int) -> str:
    return prefix + letters(index).upper()


def default_prefix(seed: int) -> str:
    return "syn" + letters(seed)


def _rng(seed: int, book: int, stream: int, page: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, book, stream, page]))


def book_style(seed: int, book: int, font: str) -> BookStyle:
    return sample_style(_rng(seed, book, _STYLE), font, cursive=is_cursive(font))


def text_of_book(style: BookStyle, vocab: Vocabulary, seed: int, book: int) -> BookText:
    """Book ``book``'s own text, in what its font draws (``synth.text.book_text``)."""
    return book_text(vocab, font_chars(style.font, vocab.chars), style.kana_share,
                     _rng(seed, book, _TEXT))


def page_layout(style: BookStyle, vocab: Vocabulary, seed: int, book: int, page: int, *,
                distractors: bool = True, text: BookText | None = None) -> PageLayout:
    """Page ``page`` of book ``book``: its ``text`` (default: the shared frequency list)."""
    return layout_page(style, vocab, _rng(seed, book, _LAYOUT, page), distractors=distractors,
                       text=text)


def layout_from_meta(meta: dict[str, Any], vocab: Vocabulary, seed: int, page: int
                     ) -> PageLayout:
    """Page ``page`` of a written book again, from its ``books.json`` entry (its style,
    index and text mode; a book from before per-book texts has the shared one)."""
    style = BookStyle.model_validate(meta["style"])
    mode = meta.get("text", {}).get("mode", "shared")
    text = text_of_book(style, vocab, seed, meta["index"]) if mode == "per_book" else None
    return page_layout(style, vocab, seed, meta["index"], page, text=text)


def render_page(style: BookStyle, vocab: Vocabulary, seed: int, book: int, page: int, *,
                comment: str = "", text: BookText | None = None) -> tuple[PageLayout, bytes]:
    """One page: its layout (boxes) and its JPEG bytes."""
    layout = page_layout(style, vocab, seed, book, page, text=text)
    rng = _rng(seed, book, _PAINT, page)
    return layout, to_jpeg(paint(layout, style, rng), style, comment=comment)


def _is_current(out: Store, key: str, comment: str) -> bool:
    if not out.exists(key):
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(out.read_bytes(key))) as img:
            return img.info.get("comment", b"") == comment.encode()
    except Exception:  # unreadable or half-written leftovers are simply made again
        return False


def fonts_across_folds(fonts: Sequence[str], n_folds: int) -> list[str]:
    """A font cycle for :func:`generate` under which each of ``n_folds`` folds gets books in
    every font: books of equal page counts go to folds in turn (book ``i`` to fold
    ``i mod n``, :func:`kzjobs.data.books.assign_folds`), so a plain cycle of an even
    number of fonts would give each fold only some of them."""
    n = len(fonts)
    return [fonts[(b // n_folds + b % n_folds) % n] for b in range(n * n_folds)]


def generate(out: Store, *, books: int, pages_per_book: int, seed: int,
             fonts: Sequence[str] | None = None, labelled: bool = True,
             book_prefix: str | None = None, start_book: int = 0,
             vocabulary_size: int | None = None, text: TextMode = "per_book",
             progress: bool = False) -> dict[str, Any]:
    """Write ``books`` synthetic books of ``pages_per_book`` pages into ``out``.

    Books cycle through ``fonts`` (default: every font in :data:`FONTS`).
    ``vocabulary_size`` keeps only that many of the most frequent code points (default:
    all 3,119), so that a few pages teach every class something. See the module
    docstring for the ``text`` modes, names (``book_prefix``, ``start_book``),
    determinism and re-runs.
    Returns a summary (pages, boxes, books with their fonts, pages/s).
    """
    if books < 1 or pages_per_book < 1:
        raise ValueError("books and pages_per_book must be at least 1")
    if seed < 0 or start_book < 0:
        raise ValueError("seed and start_book must be >= 0")
    font_ids = list(fonts) if fonts else list(FONTS)
    for font in dict.fromkeys(font_ids):
        font_spec(font)  # unknown id -> ValueError listing FONTS
        font_path(font)  # not installed -> FontNotFoundError naming the Debian package
    prefix = default_prefix(seed) if book_prefix is None else book_prefix
    if text not in ("shared", "per_book"):
        raise ValueError(f"text must be 'shared' or 'per_book', got {text!r}")
    if not _PREFIX.match(prefix):
        raise ValueError(f"book_prefix must be lower-case letters a-z, got {prefix!r}")

    vocab = load_vocabulary()
    if vocabulary_size is not None and vocabulary_size < len(vocab):
        vocab = vocab.most_frequent(vocabulary_size)
    started = time.perf_counter()
    pages: dict[str, list] = {}
    meta: dict[str, Any] = {}
    painted = 0
    kinds: Counter[str] = Counter()
    jobs = [(i, p) for i in range(books) for p in range(pages_per_book)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synth pages", unit="page", file=sys.stderr)
    for i in range(books):
        g = start_book + i
        name = book_name(prefix, g)
        font = font_ids[i % len(font_ids)]
        style = book_style(seed, g, font)
        own = text_of_book(style, vocab, seed, g) if text == "per_book" else None
        meta[name] = {"font": font, "index": g, "style": style.model_dump(mode="json"),
                      "text": {"mode": text} | ({"topic": "".join(own.topic),
                                                 "katakana": own.katakana} if own else {})}
        for p in range(pages_per_book):
            image_id = f"{name}_{p:03d}"
            key = f"images/{image_id}.jpg"
            comment = (f"kzjobs synth v{GENERATOR_VERSION} seed={seed} book={g} page={p} "
                       f"font={font} text={text}"
                       + (f" vocabulary={len(vocab)}" if vocabulary_size else ""))
            if _is_current(out, key, comment):
                layout = page_layout(style, vocab, seed, g, p, text=own)
            else:
                layout, data = render_page(style, vocab, seed, g, p, comment=comment, text=own)
                out.write_bytes(key, data)
                painted += 1
            pages[image_id] = layout.boxes
            kinds.update(layout.distractors)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    if labelled:
        out.write_bytes("unicode_translation.csv", write_translation(vocab.translation))
        out.write_json("books.json", meta)
        out.write_bytes("train.csv", write_annotations(pages))  # last: marks a complete set
    seconds = time.perf_counter() - started
    return {
        "out": out.uri,
        "labelled": labelled,
        "books": {name: m["font"] for name, m in meta.items()},
        "pages": len(pages),
        "painted": painted,
        "boxes": sum(len(b) for b in pages.values()),
        "vocabulary": len(vocab),
        "text": text,
        "distractors": dict(sorted(kinds.items())),
        "seconds": round(seconds, 2),
        "pages_per_second": round(painted / seconds, 3) if painted else None,
    }
