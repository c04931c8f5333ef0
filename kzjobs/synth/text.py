"""The text of a synthetic book: a sequence of words, each book with its own content.

Real books differ in what they are about: one is a sutra commentary, another a travel
diary, and their kanji barely overlap. Each ``per_book`` text draws words from
``wordfreq``'s Japanese list (its frequencies, from real text) reweighted by a topic of
the book's own:

- function words (particles, endings: words of hiragana only) are shared by every book,
  each book's weights jittered a little;
- content words (with a kanji) and loanwords (katakana only) take each book's own
  weights: a heavy-tailed random factor per word, times a boost for words that hold one of
  the book's topic kanji (a few dozen, drawn by frequency). Every kanji of the vocabulary
  is also a one-character word of low frequency, so rare kanji (the Jinmeiyō and
  traditional forms no modern word uses) turn up in the books whose topic holds them;
- the book's kana share (its style's) sets the mix of function and content words, and
  some books are written in katakana instead of hiragana (katakana-majiri, as in kanbun
  readings), so the katakana share varies too.

A word with a character outside the vocabulary or the book's font is never drawn. The
``shared`` text is the old one: characters drawn from one fixed frequency list
(``Vocabulary.probabilities``), every book alike; unit tests that need it ask for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from kzjobs.synth.vocab import Vocabulary

TextMode = Literal["shared", "per_book"]
LEXICON_WORDS = 60_000  # wordfreq's most frequent words kept (of ~215,000)
TOPIC_KANJI = (20, 80)  # how many kanji a book's topic holds (uniform in this range)
TOPIC_BOOST = (8.0, 40.0)  # a topic word's weight factor
TOPIC_SKIP = 150  # the commonest kanji are in no topic
TOPIC_POWER = 0.3  # topic kanji are drawn by their frequency to this power
WORD_SHAPE = 0.4  # Gamma shape of a content word's factor: small = books differ more
FUNCTION_SHAPE = 20.0  # function words vary little between books
KATAKANA_BOOKS = 0.12  # share of books written in katakana instead of hiragana
SINGLE_KANJI = 0.3  # a kanji's own weight, relative to the rarest kept word's


@dataclass(frozen=True)
class BookText:
    """What a book's pages draw: ``units`` (words, or characters) with probabilities."""

    units: tuple[str, ...]
    probs: np.ndarray
    topic: tuple[str, ...] = ()  # the topic kanji (per_book)
    katakana: bool = False  # written in katakana (per_book)

    def chars(self, rng: np.random.Generator) -> Iterator[str]:
        """The book's characters one by one, from words drawn in chunks (one RNG call
        per chunk of 256 units)."""
        while True:
            for i in rng.choice(len(self.units), size=256, p=self.probs).tolist():
                yield from self.units[i]


@dataclass(frozen=True)
class Lexicon:
    """The words whose characters are all in a vocabulary, with their frequencies."""

    words: tuple[str, ...]
    freq: np.ndarray
    kind: np.ndarray  # 0 function (hiragana), 1 content (has a kanji), 2 katakana only
    kanji_words: dict[str, np.ndarray]  # kanji -> indices of the words holding it


FUNCTION, CONTENT, KATAKANA = 0, 1, 2


def _hiragana(char: str) -> bool:
    return "\u3041" <= char <= "\u309f"


def _katakana(char: str) -> bool:
    return "\u30a1" <= char <= "\u30ff"


@lru_cache(maxsize=4)
def lexicon(chars: tuple[str, ...]) -> Lexicon:
    """``wordfreq``'s Japanese words made only of ``chars``, plus every kanji of ``chars``
    as a word of its own (weight :data:`SINGLE_KANJI` of the rarest kept word's)."""
    from collections import defaultdict
    from itertools import islice

    from wordfreq import get_frequency_dict

    allowed = set(chars)
    kept = [(w, f) for w, f in islice(get_frequency_dict("ja").items(), LEXICON_WORDS * 2)
            if set(w) <= allowed][:LEXICON_WORDS]
    kanji = [c for c in chars if not (_hiragana(c) or _katakana(c))]
    floor = SINGLE_KANJI * min(f for _, f in kept)
    words = [w for w, _ in kept] + kanji
    freq = np.array([f for _, f in kept] + [floor] * len(kanji))
    kind = np.array([FUNCTION if all(map(_hiragana, w)) else
                     KATAKANA if all(map(_katakana, w)) else CONTENT for w in words])
    index: dict[str, list[int]] = defaultdict(list)
    for i, word in enumerate(words):
        for char in set(word):
            if not (_hiragana(char) or _katakana(char)):
                index[char].append(i)
    return Lexicon(tuple(words), freq, kind,
                   {c: np.array(ix) for c, ix in index.items()})


def shared_text(vocab: Vocabulary, allowed: tuple[str, ...], kana_share: float) -> BookText:
    """The old text: characters from one fixed frequency list, kana = ``kana_share``."""
    return BookText(allowed, vocab.probabilities(allowed, kana_share))


def _to_katakana(word: str) -> str:
    return "".join(chr(ord(c) + 0x60) if "\u3041" <= c <= "\u3096" else
                   {"ゝ": "ヽ", "ゞ": "ヾ"}.get(c, c) for c in word)


def book_text(vocab: Vocabulary, allowed: tuple[str, ...], kana_share: float,
              rng: np.random.Generator) -> BookText:
    """A book's own text over the characters its font draws (``allowed``): see the
    module docstring. ``kana_share`` is what the mix of words aims at."""
    lex = lexicon(vocab.chars)
    katakana = bool(rng.random() < KATAKANA_BOOKS)
    words = tuple(map(_to_katakana, lex.words)) if katakana else lex.words
    drawable = set(allowed)
    ok = np.array([set(w) <= drawable for w in words])
    # The topic: kanji past the commonest (which every book uses anyway, and which a
    # boost would make a page of), drawn by a low power of their frequency: mostly
    # middling kanji, some rare.
    freq = {c: lex.freq[lex.kanji_words[c]].sum() for c in allowed if c in lex.kanji_words}
    ranked = sorted(freq, key=freq.get, reverse=True)
    kanji = ranked[min(TOPIC_SKIP, len(ranked) // 2):]  # a small vocabulary keeps half
    weight = np.array([freq[c] for c in kanji]) ** TOPIC_POWER
    n_topic = int(rng.integers(*TOPIC_KANJI, endpoint=True))
    topic = rng.choice(len(kanji), size=min(n_topic, len(kanji)), replace=False,
                       p=weight / weight.sum()) if kanji else []
    boost = np.ones(len(words))
    for k in topic:
        boost[lex.kanji_words[kanji[k]]] = rng.uniform(*TOPIC_BOOST)
    content = lex.kind != FUNCTION
    factor = np.where(content, rng.gamma(WORD_SHAPE, 1 / WORD_SHAPE, len(words)),
                      rng.gamma(FUNCTION_SHAPE, 1 / FUNCTION_SHAPE, len(words)))
    # Loanwords: some books use many, most few.
    factor[lex.kind == KATAKANA] *= rng.lognormal(-1.0, 1.0)
    w = np.where(ok, lex.freq * factor * boost, 0.0)
    mix = _function_share(words, w, content, kana_share)
    w[~content] *= mix / w[~content].sum()
    w[content] *= (1 - mix) / w[content].sum()
    keep = np.flatnonzero(w > 0)
    return BookText(tuple(words[i] for i in keep), w[keep] / w[keep].sum(),
                    tuple(sorted(kanji[k] for k in topic)), katakana)


def _function_share(words: tuple[str, ...], w: np.ndarray, content: np.ndarray,
                    kana_share: float) -> float:
    """The share of function words among drawn words at which the expected share of kana
    among drawn characters is ``kana_share`` (clipped to 5-95%)."""
    length = np.array([len(x) for x in words], float)
    kana = np.array([sum(_hiragana(c) or _katakana(c) for c in x) for x in words], float)

    def mean(values: np.ndarray, part: np.ndarray) -> float:
        return float((values[part] * w[part]).sum() / w[part].sum())

    lf, lc = mean(length, ~content), mean(length, content)
    kf, kc = mean(kana, ~content), mean(kana, content)
    # p kf + (1-p) kc = s (p lf + (1-p) lc), solved for p
    p = (kana_share * lc - kc) / (kf - kc - kana_share * (lf - lc))
    return float(np.clip(p, 0.05, 0.95))
