"""Train, dev and test books are written in fonts apart."""

from __future__ import annotations

import pytest

from kzjobs.synth.fonts import FONT_SPLIT, FONTS, FontSplit, coverage, font_spec, split
from kzjobs.synth.vocab import vocabulary


def test_every_font_is_in_exactly_one_set():
    sets = {name: set(split(name)) for name in ("train", "dev", "test")}
    assert sets["train"] | sets["dev"] | sets["test"] == set(FONTS)
    assert not sets["train"] & sets["dev"]
    assert not sets["train"] & sets["test"]  # fails if a test font is put into training
    assert not sets["dev"] & sets["test"]
    for name, fonts in sets.items():
        assert {font_spec(f).style for f in fonts} == {"cursive", "print"}, name
        assert all(FONT_SPLIT.set_of(f) == name for f in fonts)


def test_a_split_refuses_a_test_font_for_dev_or_an_unknown_font():
    with pytest.raises(ValueError, match="test font"):
        FontSplit(dev=("klee",), test=("klee",))
    with pytest.raises(ValueError, match="unknown"):
        FontSplit(dev=("no-such-font",), test=())
    with pytest.raises(ValueError, match="train, dev or test"):
        split("heldout")  # type: ignore[arg-type]


def test_held_out_fonts_draw_the_vocabulary_and_training_fonts_draw_every_class():
    chars = vocabulary()
    for font in split("dev") + split("test"):
        assert len(coverage(font, chars)) >= 0.93 * len(chars), font
    drawn = set().union(*(coverage(f, chars) for f in split("train")))
    assert drawn == set(chars)  # every class has training glyphs
