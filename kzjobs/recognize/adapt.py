"""Adapting at read time to each book: its class shares matched to the bundle's.

The retraining run fits each incoming book's class shifts before choosing its
pseudolabels (``pseudo.class_shift``), and the bundle carries them. A book scanned after
that run would be read without them, and those it carries were fitted on the models
before fine-tuning; so recognition fits every book's shifts itself, on the logits of
the models that read it, in two passes over its shard:

1. the networks read every page, and each page's classifier frames are kept
   (``frames/<id>.parquet``);
2. each book's shifts are fitted on up to ``pseudo.class_shift_pages`` of its pages
   (:func:`kzjobs.method.shifts.fit_book_shifts`, against the shares the bundle's models call on
   their OOF pages) and saved (``adaptation/shard-<i>-of-<n>.json``);
3. level 2 decides every page with its book's shifts, and the frames are deleted.

Each step's output is in the store, so a run that crashes resumes where it was: frames
already written are not read again, and saved shifts are not fitted again (a page added
afterwards is read with them). The shifts of a shard come from its own pages, every
n-th of the collection, so shards fit nearly the same shifts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from kzjobs.core.store import Store, join

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from kzjobs.core.profile import Profile
    from kzjobs.method.config import PseudoConfig
    from kzjobs.recognize.outputs import PageResult
    from kzjobs.recognize.recognizer import Recognizer

FRAMES, ADAPTATION = "frames", "adaptation"


def frames_key(image_id: str) -> str:
    return join(FRAMES, f"{image_id}.parquet")


def shifts_key(shard: str) -> str:
    index, count = shard.split("/")
    return join(ADAPTATION, f"shard-{index}-of-{count}.json")


def framed_pages(out: Store) -> set[str]:
    """Ids whose frames are kept (read by the first pass, not yet decided)."""
    return {k.rsplit("/", 1)[-1].removesuffix(".parquet") for k in out.list(FRAMES)
            if k.endswith(".parquet")}


def write_frames(out: Store, image_id: str, frames: Sequence[pd.DataFrame]) -> None:
    """A page's frames (one per classifier, in the recognizer's order) in one file."""
    import pandas as pd
    import pyarrow as pa

    from kzjobs.classify.predict import SCHEMA, table_bytes

    table = (pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
             if frames else SCHEMA.empty_table())
    out.write_bytes(frames_key(image_id), table_bytes(table))


def read_frames(out: Store, image_id: str) -> list[pd.DataFrame]:
    """The frames :func:`write_frames` kept, in the same order (none for a page without
    boxes)."""
    from kzjobs.method.predictions import read_predictions

    key = frames_key(image_id)
    frame = read_predictions(out.read_bytes(key), name=key)
    return [part.reset_index(drop=True)
            for _, part in frame.groupby(["kind", "fold"], sort=False)]


def spread(ids: Sequence[str], n: int) -> list[str]:
    """At most ``n`` of ``ids``, evenly spaced from the first to the last."""
    if len(ids) <= n:
        return list(ids)
    step = (len(ids) - 1) / (n - 1) if n > 1 else 0
    return [ids[round(i * step)] for i in range(n)]


def adapting(profile: Profile, adapt: bool | None) -> bool:
    """Whether a reader fits each book's shifts: ``adapt`` if given, else as the blend
    was trained (``pseudo.class_shift``)."""
    return profile.pseudo.class_shift if adapt is None else adapt


def check_shares(recognizer: Recognizer, model: str, opt_out: str) -> None:
    if not recognizer.class_shares:
        raise ValueError(f"{model} has no class shares to fit books' shifts to (a bundle "
                         f"made before they were kept): re-bundle it, or pass {opt_out}")


def fit_books(ids: Iterable[str], frames_of: Callable[[str], Sequence[pd.DataFrame]],
              shares: Mapping[str, float], cfg: PseudoConfig,
              book_of: Callable[[str], str] | None = None) -> dict[str, dict[str, float]]:
    """``{book: {code: shift}}`` of the books of ``ids`` (each page's book by
    ``book_of``: its PDF, TIFF or manifest; else the book its id names), from each page's
    frames (``frames_of``), one book at a time so that memory holds one book's sample."""
    import pandas as pd

    from kzjobs.data.books import book_id
    from kzjobs.method.blend import blend
    from kzjobs.method.shifts import fit_class_shift
    from kzjobs.recognize.recognizer import frames_per_model

    book_of = book_of or book_id
    by_book: dict[str, list[str]] = {}
    for image_id in sorted(ids):
        by_book.setdefault(book_of(image_id), []).append(image_id)
    target = pd.Series(dict(shares), dtype=float)
    shifts: dict[str, dict[str, float]] = {}
    for book, pages in by_book.items():
        read = [f for f in map(frames_of, spread(pages, cfg.class_shift_pages)) if f]
        if read:  # one book's pages: fit_book_shifts's fit, under the book given here
            shifts[book] = fit_class_shift(blend(frames_per_model(read)).reset_index(drop=True),
                                           target, max_shift=cfg.max_class_shift,
                                           min_expected=cfg.min_class_expected)
    return shifts


def shifted(frames: Sequence[pd.DataFrame], shift: Mapping[str, float]) -> list[pd.DataFrame]:
    from kzjobs.method.shifts import shift_classes

    return [shift_classes(frame, shift) for frame in frames]


def recognize_in_memory(recognizer: Recognizer,
                        pages: Callable[[], Iterable[tuple[str, Image.Image]]], batch: int,
                        workers: int = 1) -> Iterator[tuple[PageResult, Image.Image]]:
    """The same passes with the frames in memory, for a call's worth of pages (the
    registry's pyfunc); ``pages()`` yields them afresh for each pass, so that memory holds
    frames, not images. A collection goes through the recognize job, whose frames in the
    store let a crashed run resume. ``recognizer`` reads without book shifts."""
    from kzjobs.data.books import book_id

    frames = {image_id: f for (image_id, _), f in recognizer.read_stream(pages(), workers,
                                                                      ahead=batch + workers)}
    shifts = fit_books(frames, frames.__getitem__, recognizer.class_shares,
                       recognizer.profile.pseudo)
    decided = ((page, shifted(frames[page[0]], shifts.get(book_id(page[0]), {})))
               for page in pages())
    yield from recognizer.decide_stream(decided, batch)
