"""Each book draws its own text: shared particles, its own content words and kanji."""

from __future__ import annotations

from collections import Counter

import numpy as np

from kzjobs.data.format import code_to_char
from kzjobs.synth.generator import book_style, page_layout, text_of_book
from kzjobs.synth.text import book_text, lexicon
from kzjobs.synth.vocab import load_vocabulary

FUNCTION_KANA = set("のにてはがをとでしたかもないるす")  # particles and endings


def _book_chars(seed: int, book: int, font: str, pages: int = 4) -> list[str]:
    vocab = load_vocabulary()
    style = book_style(seed, book, font)
    text = text_of_book(style, vocab, seed, book)
    return [code_to_char(b.code) for p in range(pages)
            for b in page_layout(style, vocab, seed, book, p, distractors=False,
                                 text=text).boxes]


def test_two_books_share_particles_but_not_their_kanji():
    kana = load_vocabulary().kana
    books = [_book_chars(3, b, "hanazono") for b in range(2)]
    kanji = [Counter(c for c in chars if c not in kana) for chars in books]
    for chars in books:
        # a katakana-majiri book writes its particles in katakana
        top = [c if c < "\u30a1" else chr(ord(c) - 0x60)
               for c, _ in Counter(chars).most_common(10)]
        assert len(FUNCTION_KANA & set(top)) >= 6, top  # the shared function words lead
    sets = [set(k) for k in kanji]
    assert len(sets[0] & sets[1]) / len(sets[0] | sets[1]) < 0.35  # mostly different kanji
    # some kanji are common in one book and absent from the other
    own = [c for c, n in kanji[0].most_common(40) if c not in sets[1]]
    assert own, kanji[0].most_common(40)
    # the kanji distributions differ measurably (total variation distance)
    keys = sets[0] | sets[1]
    p = np.array([kanji[0][c] for c in keys]) / sum(kanji[0].values())
    q = np.array([kanji[1][c] for c in keys]) / sum(kanji[1].values())
    assert 0.5 * np.abs(p - q).sum() > 0.4


def test_a_book_text_is_reproducible_and_follows_its_kana_share():
    vocab = load_vocabulary()
    allowed = vocab.chars
    a = book_text(vocab, allowed, 0.65, np.random.default_rng(1))
    b = book_text(vocab, allowed, 0.65, np.random.default_rng(1))
    c = book_text(vocab, allowed, 0.65, np.random.default_rng(2))
    assert a.units == b.units and np.array_equal(a.probs, b.probs) and a.topic == b.topic
    assert a.topic != c.topic
    assert _book_chars(4, 0, "seto") == _book_chars(4, 0, "seto")
    for share in (0.5, 0.8):
        text = book_text(vocab, allowed, share, np.random.default_rng(5))
        chars = "".join(text.units[i] for i in np.random.default_rng(0).choice(
            len(text.units), size=4000, p=text.probs))
        drawn = sum(ch in vocab.kana for ch in chars) / len(chars)
        assert abs(drawn - share) < 0.05, (share, drawn)


def test_words_a_font_cannot_draw_are_never_drawn():
    vocab = load_vocabulary()
    allowed = tuple(c for c in vocab.chars if c != "人")  # a font without 人
    text = book_text(vocab, allowed, 0.65, np.random.default_rng(0))
    assert not any("人" in w for w in text.units)
    assert set("".join(text.units)) <= set(allowed)
    # every kanji of the vocabulary can be drawn, as a word or alone
    lex = lexicon(vocab.chars)
    assert set(vocab.chars) - vocab.kana <= set("".join(lex.words))


def test_the_shared_text_keeps_one_frequency_list(tmp_path):
    from kzjobs.core.store import open_store
    from kzjobs.data.format import read_annotations
    from kzjobs.synth import generate

    store = open_store(tmp_path)
    summary = generate(store, books=2, pages_per_book=1, seed=2, fonts=["seto"],
                       text="shared")
    assert summary["text"] == "shared"
    assert store.read_json("books.json")["syncA"]["text"] == {"mode": "shared"}
    codes = Counter(b.code for boxes in read_annotations(store.read_bytes("train.csv")).values()
                    for b in boxes)
    assert codes.most_common(1)[0][0] == "U+306E"  # の
