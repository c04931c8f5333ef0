"""A loaded blend: pages in, characters out. Models load once; pages stream through.

The steps per page are the method's: the detector finds boxes, every classifier
(kind × fold) scores them over the TTA scales, and level 2 picks each box's code
(or drops it as ``seg_fp``). A bundle without level-2 models falls back to the blend's
top class, which is the ablation's "blend" step.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from kzjobs.core.device import select_device
from kzjobs.core.profile import Profile, load_profile
from kzjobs.core.store import Store
from kzjobs.data.format import SEG_FP, UNKNOWN, Box
from kzjobs.recognize.outputs import Char, PageResult
from kzjobs.release.bundle import Bundle

if TYPE_CHECKING:
    import pandas as pd

    from kzjobs.level2.model import Level2Model

log = logging.getLogger(__name__)


@dataclass
class LoadedClassifier:
    kind: str
    fold: int
    model: torch.nn.Module
    vocab: list[str]
    page_size: int  # the scale it was trained at: a classifier reads pages at that scale


class Recognizer:
    def __init__(
        self,
        profile: Profile,
        detector: torch.nn.Module,
        classifiers: list[LoadedClassifier],
        level2: Level2Model | None,
        device: torch.device,
        seg_fp_shift: float = 0.0,
        class_shifts: Mapping[str, Mapping[str, float]] | None = None,
        class_shares: Mapping[str, float] | None = None,
    ) -> None:
        self.profile = profile
        self.detector = detector.to(device).eval()  # load_detector's layout is kept
        self.classifiers = classifiers  # load_model's layout is kept
        for c in classifiers:
            c.model.to(device).eval()
        self.level2 = level2
        self.device = device
        self.seg_fp_shift = seg_fp_shift  # the bundle's adaptation to new books
        self.class_shifts = dict(class_shifts or {})  # and to each book of its collections
        self.class_shares = dict(class_shares or {})  # what a new book's shifts fit to
        self.books: dict[str, str] = {}  # page id -> book, for pages of multi-page sources

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, root: Store, *, profile: str | Profile | None = None,
        device: str = "auto",
    ) -> Recognizer:
        """Load the models the bundle names (``classify.inference_folds`` of each kind);
        ``profile`` (a name, a YAML path or a Profile) overrides the inference knobs."""
        from kzjobs.classify.model import load_model
        from kzjobs.core.checkpoint import load_checkpoint
        from kzjobs.detect.model import load_detector
        from kzjobs.level2.model import Level2Model

        prof = bundle_profile(bundle, profile)
        torch_device = select_device(device)
        # One detector: the first fold's. Every fold's detector reaches ~the same boxes,
        # and detection is the cheaper half of the errors (the seed's finding too).
        detector, _ = load_detector(load_checkpoint(root.read_bytes(bundle.detector[0])),
                                    prof.detect, torch_device)
        int8 = reads_int8(bundle, prof, torch_device)
        classifiers = []
        for kind in sorted(bundle.classifiers):
            for path in bundle.classifiers[kind][: prof.classify.inference_folds or None]:
                ckpt = load_checkpoint(root.read_bytes(path))
                if int8:
                    from kzjobs.classify.quantize import load_int8_model

                    trunk = root.read_bytes(bundle.int8_trunks[path])
                    model, vocab = load_int8_model(ckpt, trunk), list(ckpt["vocabulary"])
                else:
                    model, vocab = load_model(ckpt, torch_device)
                page_size = int(ckpt.get("config", {}).get("page_size", prof.classify.page_size))
                classifiers.append(
                    LoadedClassifier(kind, int(ckpt.get("fold", -1)), model, vocab, page_size)
                )
        level2 = None
        if bundle.level2.lightgbm:
            level2 = Level2Model.load(root, bundle.level2.prefix)
        return cls(prof, detector, classifiers, level2, torch_device, bundle.seg_fp_shift,
                   bundle.class_shifts, bundle.class_shares)

    def book_of(self, image_id: str) -> str:
        """The book of a page: its PDF, TIFF or manifest (:meth:`with_books`), else the
        book its id names."""
        from kzjobs.data.books import book_id

        return self.books.get(image_id) or book_id(image_id)

    def with_books(self, books: Mapping[str, str]) -> Recognizer:
        """The same models, knowing the book of the pages that come from a multi-page
        file or a manifest (the key of their book's class shifts)."""
        other = copy.copy(self)
        other.books = dict(books)
        return other

    def without_book_shifts(self) -> Recognizer:
        """The same models, reading every book without the class shifts the bundle fitted
        to its books (for a reader that fits its own)."""
        other = copy.copy(self)
        other.class_shifts = {}
        return other

    def detect(self, image: Image.Image) -> list[Box]:
        from kzjobs.detect.engine import detect_page

        cfg = self.profile.detect
        dets = detect_page(self.detector, image, cfg, self.device, amp=cfg.amp)
        return [Box(UNKNOWN, d.x, d.y, d.w, d.h) for d in dets]

    def classify(self, image_id: str, image: Image.Image, boxes: list[Box]) -> list[pd.DataFrame]:
        """One prediction frame per classifier (the classifier's parquet schema), its
        ``seg_fp`` logit lowered by the bundle's shift, and its classes shifted by the
        bundle's shifts for the page's book, if any."""
        from kzjobs.classify.predict import page_table, predict_logits
        from kzjobs.method.predictions import predictions_frame
        from kzjobs.method.shifts import shift_classes

        cfg = self.profile.classify
        shift = dict(self.class_shifts.get(self.book_of(image_id), {}))
        if self.seg_fp_shift:
            shift[SEG_FP] = -self.seg_fp_shift
        array = np.asarray(image)
        frames = []
        for c in self.classifiers:
            logits = predict_logits(c.model, array, boxes, cfg, device=self.device,
                                    page_size=c.page_size)
            table = page_table(
                image_id, boxes, logits, c.vocab, top_k=cfg.top_k, kind=c.kind, fold=c.fold
            )
            frame = predictions_frame(table, name=f"{c.kind}/fold{c.fold}")
            frames.append(shift_classes(frame, shift))
        return frames

    def decide(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        """``image_id, box_id, x, y, w, h, code, prob`` of the boxes kept."""
        if self.level2 is not None:
            from kzjobs.level2.model import predict

            return predict(frames, self.level2)
        return top_class(frames)

    def read_page(self, image_id: str, image: Image.Image) -> list[pd.DataFrame]:
        """The networks' half of a page: its boxes, scored by every classifier (one frame
        each; none when the detector finds nothing). Pages may be read side by side in
        threads: the models are only read, and autocast and inference mode are per thread."""
        boxes = self.detect(image)
        return self.classify(image_id, image, boxes) if boxes else []

    def decide_pages(self, pages: Sequence[tuple[str, Image.Image]],
                     frames_of_pages: Sequence[list[pd.DataFrame]]) -> list[PageResult]:
        """Level 2 decides for several read pages in one call (on one page its fixed cost
        is two thirds of its time). A page's result does not depend on the pages it is
        decided with."""
        results = [PageResult(image_id, image.width, image.height) for image_id, image in pages]
        read = [frames for frames in frames_of_pages if frames]
        if not read:
            return results
        decided = self.decide(frames_per_model(read))
        by_page = dict(tuple(decided.groupby("image_id", sort=False)))
        for result in results:
            page = by_page.get(result.image_id)
            if page is None:
                continue
            result.chars = [
                Char(code, int(x), int(y), int(w), int(h), round(float(p), 4))
                for code, x, y, w, h, p in zip(
                    page["code"], page["x"], page["y"], page["w"], page["h"], page["prob"],
                    strict=True,
                )
            ]
        return results

    def recognize_pages(self, pages: Sequence[tuple[str, Image.Image]]) -> list[PageResult]:
        return self.decide_pages(pages, [self.read_page(*page) for page in pages])

    def recognize_page(self, image_id: str, image: Image.Image) -> PageResult:
        return self.recognize_pages([(image_id, image)])[0]

    def recognize_stream(self, pages: Iterable[tuple[str, Image.Image]], batch: int,
                         workers: int = 1) -> Iterator[tuple[PageResult, Image.Image]]:
        """Each page's result with its image, in the order given, ``batch`` pages to a
        level-2 call. ``pages`` is read lazily, so memory holds a batch and the pages in
        flight whatever the collection's size."""
        return self.decide_stream(self.read_stream(pages, workers, ahead=batch + workers),
                                  batch)

    def read_stream(self, pages: Iterable[tuple[str, Image.Image]], workers: int = 1,
                    ahead: int = 1) -> Iterator[tuple[tuple[str, Image.Image], list]]:
        """Each page with its :meth:`read_page` frames, in the order given.

        ``workers`` > 1 reads that many pages side by side in threads (at most ``ahead``
        in flight), each with an equal share of torch's CPU threads: whole pages in
        parallel keep the cores busier than one page's operators split between them,
        without a second copy of the models as in a second shard (bench/RESULTS.md,
        'Run of 2026-12-05 01:00 UTC')."""
        from kzjobs.core.device import torch_threads

        on_cpu = workers > 1 and self.device.type == "cpu"
        with torch_threads(max(1, torch.get_num_threads() // workers) if on_cpu else 0):
            if workers > 1:
                yield from self._read_in_threads(pages, workers, max(ahead, workers))
            else:
                for page in pages:
                    yield page, self.read_page(*page)

    def decide_stream(self, read: Iterable[tuple[tuple[str, Image.Image], list]], batch: int
                      ) -> Iterator[tuple[PageResult, Image.Image]]:
        """Read pages (each with its frames) decided ``batch`` to a level-2 call: each
        page's result with its image, in the order given."""
        for chunk in batched(read, batch):
            pages_read = [page for page, _ in chunk]
            decided = self.decide_pages(pages_read, [frames for _, frames in chunk])
            yield from zip(decided, (image for _, image in pages_read), strict=True)

    def _read_in_threads(self, pages: Iterable[tuple[str, Image.Image]], workers: int,
                         ahead: int) -> Iterator[tuple[tuple[str, Image.Image], list]]:
        """:meth:`read_page` over ``pages`` on ``workers`` threads, in order, with at most
        ``ahead`` pages in flight."""
        from collections import deque
        from concurrent.futures import Future, ThreadPoolExecutor

        pending: deque[tuple[tuple[str, Image.Image], Future]] = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="kz-page") as pool:
            try:
                for page in pages:
                    pending.append((page, pool.submit(self.read_page, *page)))
                    if len(pending) >= ahead:
                        page_read, future = pending.popleft()
                        yield page_read, future.result()
                while pending:
                    page_read, future = pending.popleft()
                    yield page_read, future.result()
            finally:  # a failed page or a closed stream: the rest are not started
                for _, future in pending:
                    future.cancel()


def bundle_profile(bundle: Bundle, profile: str | Profile | None = None) -> Profile:
    """The profile a bundle is read with: ``profile`` (a name, a YAML path or a Profile)
    when given, else the one it was trained with."""
    if isinstance(profile, Profile):
        return profile
    if profile:
        return load_profile(profile)
    return Profile.model_validate(bundle.profile_data or {"name": bundle.profile})


def reads_int8(bundle: Bundle, profile: Profile, device: torch.device) -> bool:
    """Whether the classifiers read with their int8 trunks: when the profile asks for them
    and the pages are read on an x86 CPU (a GPU reads in fp16). A bundle made without
    them is an error, not a quiet fall-back to float."""
    if not profile.classify.int8_trunk or device.type != "cpu":
        return False
    from kzjobs.classify.quantize import int8_supported

    if not int8_supported():
        log.warning("classify.int8_trunk: this CPU's torch has no x86 int8 kernels; "
                    "reading in float")
        return False
    read = [p for paths in bundle.classifiers.values()
            for p in paths[: profile.classify.inference_folds or None]]
    if missing := [p for p in read if p not in bundle.int8_trunks]:
        raise ValueError(f"classify.int8_trunk is on, but the bundle has no int8 trunk for "
                         f"{missing}: make the bundle with a profile that sets it")
    return True


def page_workers(device: torch.device) -> int:
    """Pages read side by side by default: one per torch CPU thread (the physical cores, or
    OMP_NUM_THREADS, which the launcher sets to a container's CPUs), at most 8 so that
    memory stays small on large machines; one on a GPU, which runs one page at a time."""
    return 1 if device.type != "cpu" else max(1, min(8, torch.get_num_threads()))


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items, the last one shorter (itertools.batched is 3.12+)."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def frames_per_model(frames_of_pages: Sequence[Sequence[pd.DataFrame]]) -> list[pd.DataFrame]:
    """Per-page prediction frames (one per classifier) joined into one frame per classifier."""
    import pandas as pd

    return [pd.concat(parts, ignore_index=True) for parts in zip(*frames_of_pages, strict=True)]


def top_class(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The blend's best class per box; its confidence is the sigmoid of the margin
    between the top two blended logits (the quantity pseudolabelling thresholds)."""
    from kzjobs.method.blend import blend
    from kzjobs.method.predictions import top_two

    blended = blend(frames)
    code, top, second = top_two(blended)
    margin = np.nan_to_num(top - second, nan=top)
    decided = blended[["image_id", "box_id", "x", "y", "w", "h"]].assign(
        code=code, prob=1 / (1 + np.exp(-margin))
    )
    return decided[decided["code"] != SEG_FP].reset_index(drop=True)
