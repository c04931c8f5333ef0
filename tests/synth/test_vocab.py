"""The vocabulary: kana, Jōyō and Jinmeiyō kanji, Zipf-like with kana about two thirds,
and no character a font cannot draw."""

from __future__ import annotations

from collections import Counter

import pytest

from kzjobs.data.format import code_to_char, is_code_point, read_annotations, read_translation
from kzjobs.synth import FONTS
from kzjobs.synth.fonts import coverage, glyph_mask
from kzjobs.synth.vocab import load_vocabulary, vocabulary


def test_vocabulary_is_kana_and_joyo_and_jinmeiyo_kanji():
    import unicodedata

    from kanji_lists import JINMEIYO, JOYO

    vocab = load_vocabulary()
    assert vocabulary() == vocab.chars and len(vocab) == 3119
    assert len(set(vocab.chars)) == len(vocab)
    kanji = {c for c in vocab.chars if c not in vocab.kana}
    assert set(JOYO.HEISEI22) | set(JOYO.SHOWA56) <= kanji <= set(JOYO) | set(JINMEIYO)
    assert {"亞", "佛", "來", "傳"} <= kanji  # traditional forms (Jinmeiyō)
    # compatibility ideographs would fold into a Jōyō kanji under normalisation
    assert all(unicodedata.normalize("NFC", c) == c for c in kanji)
    assert all(0x3041 <= ord(c) <= 0x30FE for c in vocab.kana)
    assert 170 <= len(vocab.kana) <= 185
    assert all(is_code_point(code) and code_to_char(code) == char
               for code, char in vocab.translation.items())


def test_drawn_characters_follow_the_vocabulary(sample):
    store, _ = sample
    vocab = read_translation(store.read_bytes("unicode_translation.csv"))
    assert vocab == load_vocabulary().translation  # the whole vocabulary
    truth = read_annotations(store.read_bytes("train.csv"))
    codes = [b.code for boxes in truth.values() for b in boxes]
    assert set(codes) <= set(vocab)
    kana = load_vocabulary().kana
    books = store.read_json("books.json")
    for book, meta in books.items():  # each book about its style's kana share
        own = [code_to_char(b.code) for i, boxes in truth.items() if i.startswith(book)
               for b in boxes]
        share = sum(c in kana for c in own) / len(own)
        assert abs(share - meta["style"]["kana_share"]) < 0.1, (book, share)
    # Zipf-like: the particle の leads, and a long tail of kanji appears once.
    counts = Counter(codes)
    assert counts.most_common(1)[0][0] == "U+306E"
    assert sum(1 for n in counts.values() if n == 1) > 100


@pytest.mark.parametrize("font", FONTS)
def test_fonts_draw_every_character_they_cover(font):
    vocab = load_vocabulary()
    covered = coverage(font, vocab.chars)
    assert len(covered) > 2200
    assert all(glyph_mask(font, c, 20).size for c in covered[::7])


def test_coverage_drops_what_a_font_lacks():
    # The Kouzan and Aoyagi faces have no small ka/ke; Aoyagi maps 籠 to a blank glyph.
    assert coverage("kouzan-sousyo", ["か", "ゕ", "ゖ"]) == ["か"]
    assert coverage("aoyagi-kouzan", ["籠", "語"]) == ["語"]
    assert glyph_mask("aoyagi-kouzan", "籠", 40).size == 0  # it would be a blank box
    assert coverage("ipaex-mincho", ["\U0002a6d6", "あ"]) == ["あ"]


def test_a_small_vocabulary_keeps_the_most_frequent_characters(tmp_path):
    from kzjobs.core.store import open_store
    from kzjobs.synth import generate

    full = load_vocabulary()
    small = full.most_frequent(200)
    assert len(small) == 200 and set(small.chars) < set(full.chars)
    # the commonest of each script stay, the rarest go; each script's shares sum to 1
    assert {"の", "に", "人", "日"} <= set(small.chars)
    assert full.chars[-1] not in small.chars
    assert 0 < small.is_kana.sum() < 200
    for part in (small.is_kana, ~small.is_kana):
        assert small.share[part].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one"):
        full.most_frequent(0)

    store = open_store(tmp_path)
    summary = generate(store, books=2, pages_per_book=2, seed=5, fonts=["kouzan-gyousyo"],
                       vocabulary_size=60)
    drawn = Counter(box.code for boxes in read_annotations(store.read_bytes("train.csv")).values()
                    for box in boxes)
    allowed = set(read_translation(store.read_bytes("unicode_translation.csv")))
    assert summary["vocabulary"] == len(allowed) == 60
    assert set(drawn) <= allowed and len(drawn) > 20
