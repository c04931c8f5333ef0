"""The vocabulary of synthetic books: 88 hiragana, 88 katakana (each with its iteration
marks), the 2,136 Jōyō kanji and the 807 Jinmeiyō kanji (name kanji; among them the 5
the 2010 revision dropped from the Jōyō list, and traditional forms, 旧字体, of Jōyō
kanji such as 亞 佛 來 傳): 3,119 code points (:func:`vocabulary`).

The kanji lists come from the ``kanji-lists`` package (PyPI, MIT licence,
https://github.com/ffe4/kanji-lists), taken from the official lists. The Jinmeiyō list's
57 CJK compatibility ideographs (神 U+FA19 and the like) are left out: Unicode
normalisation folds each into a Jōyō kanji, so they cannot be classes of their own.

Kanji are ranked by their frequency in Japanese text (the ``wordfreq`` package's word
list, each word's frequency added to each of its characters); the few kanji no word uses
follow in the old order (a short head of common kanji, Kyōiku grades 1-6, the rest).
Kana keep a hand-made ranking of classical prose. The books' text (``synth.text``) draws
words, not these shares; the shares rank the vocabulary (``most_frequent``) and make the
old shared-frequency books that some unit tests use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

# Hiragana roughly by frequency in classical prose (the seed solution's top classes are
# the particles and auxiliaries: の に て を は し と か る ...); the rest follow in
# code-point order. Katakana use the same ranking (カ ranks like か).
_HIRAGANA_ORDER = (
    "のにてをはしとかるいりたなもらくれけすこまあへおさせきよみひうゆえめねそわほろふちやむつ"
    "ぬんゐゑゝがどばじずぞだでぎごげぐべびぶぼざぜぢづぱぴぷぺぽゞ"
)
HIRAGANA = (*(chr(c) for c in range(0x3041, 0x3097)), "ゝ", "ゞ")  # + iteration marks
_KANA_TO_KATA = {h: chr(ord(h) + 0x60) for h in HIRAGANA[:-2]} | {"ゝ": "ヽ", "ゞ": "ヾ"}
KATAKANA_SHARE = 0.12  # of kana: most kuzushiji books are written in hiragana
TYPICAL_KANA_SHARE = 0.66  # the middle of a book style's kana share (style.py)
ZIPF_KANA = 1.0
ZIPF_KANJI = 0.85
# Kanji common in Edo-period prose lead the ranking; then Kyōiku grades 1-6, then the rest.
_KANJI_HEAD = "人日事一大中上下心子月年御物神天見思出行時無申国家生所方本道二三十"
_KANJI_SHUFFLE_SEED = 20190719  # fixed: the ranking is a property of the language, not a run


def _ranked_kana() -> tuple[list[str], list[str]]:
    hira = list(dict.fromkeys(_HIRAGANA_ORDER + "".join(HIRAGANA)))
    kata = [_KANA_TO_KATA[h] for h in hira]
    return hira, kata


def _listed_kanji() -> list[str]:
    """Jōyō (2010), then what the 1981 list had more, then Jinmeiyō, without the
    compatibility ideographs that normalisation would fold into another kanji."""
    import unicodedata

    from kanji_lists import JINMEIYO, JOYO

    extra = sorted(set(JOYO.SHOWA56) - set(JOYO.HEISEI22))
    name = sorted(set(JINMEIYO) - set(JOYO.HEISEI22))
    listed = dict.fromkeys((*_graded_kanji(), *extra, *name))  # the 1981 five are Jinmeiyō
    return [c for c in listed if unicodedata.normalize("NFC", c) == c]


def _graded_kanji() -> list[str]:
    from kanji_lists import JOYO, KYOIKU

    rng = np.random.default_rng(_KANJI_SHUFFLE_SEED)
    ranked = [c for c in dict.fromkeys(_KANJI_HEAD) if c in JOYO.HEISEI22]
    seen = set(ranked)
    grades = [getattr(KYOIKU.REIWA2, f"GRADE{g}") for g in range(1, 7)] + [JOYO.HEISEI22]
    for group in grades:
        # Sets have no order: sort first so the shuffle, and so the ranking, is reproducible.
        members = sorted(c for c in group if c not in seen and c in JOYO.HEISEI22)
        ranked.extend(members[i] for i in rng.permutation(len(members)))
        seen.update(members)
    return ranked


@lru_cache(maxsize=1)
def char_frequencies() -> dict[str, float]:
    """How often each character occurs in Japanese text: the frequency of every word of
    ``wordfreq``'s Japanese list, added to each of its characters (not normalised)."""
    from collections import defaultdict

    from wordfreq import get_frequency_dict

    counts: dict[str, float] = defaultdict(float)
    for word, freq in get_frequency_dict("ja").items():
        for char in word:
            counts[char] += freq
    return dict(counts)


def _ranked_kanji() -> list[str]:
    listed = _listed_kanji()
    freq = char_frequencies()
    order = {c: i for i, c in enumerate(listed)}  # ties (unused kanji): the listed order
    return sorted(listed, key=lambda c: (-freq.get(c, 0.0), order[c]))


def _zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


@dataclass(frozen=True)
class Vocabulary:
    """Every code point of the synthetic books, with each one's share within its script."""

    chars: tuple[str, ...]
    is_kana: np.ndarray  # bool per char
    share: np.ndarray  # Zipf share within kana or within kanji (each part sums to 1)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.chars)

    @cached_property
    def kana(self) -> frozenset[str]:
        return frozenset(c for c, k in zip(self.chars, self.is_kana, strict=True) if k)

    def most_frequent(self, n: int) -> Vocabulary:
        """The ``n`` code points a typical book uses most (kana and kanji in the mix of
        ``TYPICAL_KANA_SHARE``), each script's shares renormalised: a vocabulary small
        enough to learn from a few pages, for demos and quick tests."""
        if n < 1:
            raise ValueError(f"a vocabulary needs at least one character, got {n}")
        weight = self.share * np.where(self.is_kana, TYPICAL_KANA_SHARE, 1 - TYPICAL_KANA_SHARE)
        keep = np.sort(np.argsort(-weight, kind="stable")[:n])
        share = self.share[keep]
        kana = self.is_kana[keep]
        for part in (kana, ~kana):
            if part.any():
                share[part] /= share[part].sum()
        return Vocabulary(tuple(self.chars[i] for i in keep), kana, share)

    @cached_property
    def translation(self) -> dict[str, str]:
        """``{"U+304B": "か"}`` for ``unicode_translation.csv``."""
        from kzjobs.data.format import char_to_code

        return {char_to_code(c): c for c in self.chars}

    def probabilities(self, allowed: tuple[str, ...], kana_share: float) -> np.ndarray:
        """Drawing probabilities over ``allowed`` (a font's coverage), kana = ``kana_share``."""
        key = (allowed, round(kana_share, 6))
        if key not in self._cache:
            index = {c: i for i, c in enumerate(self.chars)}
            idx = np.array([index[c] for c in allowed])
            kana = self.is_kana[idx]
            w = self.share[idx].copy()
            # Renormalise each script over what the font draws, then mix the scripts.
            w[kana] *= kana_share / w[kana].sum()
            w[~kana] *= (1.0 - kana_share) / w[~kana].sum()
            self._cache[key] = w / w.sum()
        return self._cache[key]


def vocabulary() -> tuple[str, ...]:
    """Every code point of the synthetic books (kana, then kanji by frequency): the
    classes a model of the full task reads."""
    return load_vocabulary().chars


@lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    hira, kata = _ranked_kana()
    kanji = _ranked_kanji()
    chars = tuple(hira + kata + kanji)
    is_kana = np.array([True] * (len(hira) + len(kata)) + [False] * len(kanji))
    share = np.concatenate([
        (1 - KATAKANA_SHARE) * _zipf(len(hira), ZIPF_KANA),
        KATAKANA_SHARE * _zipf(len(kata), ZIPF_KANA),
        _zipf(len(kanji), ZIPF_KANJI),
    ])
    return Vocabulary(chars, is_kana, share)
