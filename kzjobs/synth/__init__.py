"""Synthetic kuzushiji-like books in the competition's format.

``generate(out, books=..., pages_per_book=..., seed=...)`` writes ``train.csv``,
``unicode_translation.csv``, ``books.json`` and ``images/<image_id>.jpg`` into a store;
``FONTS`` lists the short font ids. Modules: ``fonts`` (registry, glyph coverage and
masks, the train/dev/test font split), ``vocab`` (code points and frequencies), ``text``
(each book's own text, from real word frequencies), ``style`` (a book's style),
``render`` (layout, glyphs, distractors), ``paper`` (texture, stains, blur, JPEG),
``generator`` (books, names, files) and ``job`` (the ``kzjobs synth`` job).
"""

from kzjobs.synth.fonts import FONTS
from kzjobs.synth.generator import fonts_across_folds, generate

__all__ = ["FONTS", "fonts_across_folds", "generate"]
