"""A loaded blend: pages in, characters out. Models load once; pages stream through.

The steps per page are the method's: the detector finds boxes, every classifier
(kind × fold) scores them over the TTA scales, and level 2 picks each box's code
(or drops it as ``seg_fp``). A bundle without level-2 models falls back to the blend's
top class, which is the ablation's "blend" step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from kzjobs.bundle import Bundle
from kzjobs.data.format import SEG_FP, UNKNOWN, Box
from kzjobs.device import select_device
from kzjobs.profile import Profile, load_profile
from kzjobs.recognize.outputs import Char, PageResult
from kzjobs.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from kzjobs.level2.model import Level2Model


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
    ) -> None:
        self.profile = profile
        self.detector = detector.to(device).eval()  # load_detector's layout is kept
        self.classifiers = classifiers  # load_model's layout is kept
        for c in classifiers:
            c.model.to(device).eval()
        self.level2 = level2
        self.device = device
        self.seg_fp_shift = seg_fp_shift  # the bundle's adaptation to new books

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, root: Store, *, profile: str | Profile | None = None,
        device: str = "auto",
    ) -> Recognizer:
        """Load the models the bundle names (``classify.inference_folds`` of each kind);
        ``profile`` (a name, a YAML path or a Profile) overrides the inference knobs."""
        from kzjobs.checkpoint import load_checkpoint
        from kzjobs.classify.model import load_model
        from kzjobs.detect.model import load_detector
        from kzjobs.level2.model import Level2Model

        if isinstance(profile, Profile):
            prof = profile
        elif profile:
            prof = load_profile(profile)
        else:
            prof = Profile.model_validate(bundle.profile_data or {"name": bundle.profile})
        torch_device = select_device(device)
        # One detector: the first fold's. Every fold's detector reaches ~the same boxes,
        # and detection is the cheaper half of the errors (the seed's finding too).
        detector, _ = load_detector(load_checkpoint(root.read_bytes(bundle.detector[0])),
                                    prof.detect, torch_device)
        classifiers = []
        for kind in sorted(bundle.classifiers):
            for path in bundle.classifiers[kind][: prof.classify.inference_folds or None]:
                ckpt = load_checkpoint(root.read_bytes(path))
                model, vocab = load_model(ckpt, torch_device)
                page_size = int(ckpt.get("config", {}).get("page_size", prof.classify.page_size))
                classifiers.append(
                    LoadedClassifier(kind, int(ckpt.get("fold", -1)), model, vocab, page_size)
                )
        level2 = None
        if bundle.level2.lightgbm:
            level2 = Level2Model.load(root, bundle.level2.prefix)
        return cls(prof, detector, classifiers, level2, torch_device, bundle.seg_fp_shift)

    def detect(self, image: Image.Image) -> list[Box]:
        from kzjobs.detect.engine import detect_page

        cfg = self.profile.detect
        dets = detect_page(self.detector, image, cfg, self.device, amp=cfg.amp)
        return [Box(UNKNOWN, d.x, d.y, d.w, d.h) for d in dets]

    def classify(self, image_id: str, image: Image.Image, boxes: list[Box]) -> list[pd.DataFrame]:
        """One prediction frame per classifier (the classifier's parquet schema), its
        ``seg_fp`` logit lowered by the bundle's shift."""
        from kzjobs.blend import predictions_frame, shift_seg_fp
        from kzjobs.classify.predict import page_table, predict_logits

        cfg = self.profile.classify
        array = np.asarray(image)
        frames = []
        for c in self.classifiers:
            logits = predict_logits(c.model, array, boxes, cfg, device=self.device,
                                    page_size=c.page_size)
            table = page_table(
                image_id, boxes, logits, c.vocab, top_k=cfg.top_k, kind=c.kind, fold=c.fold
            )
            frame = predictions_frame(table, name=f"{c.kind}/fold{c.fold}")
            frames.append(shift_seg_fp(frame, self.seg_fp_shift))
        return frames

    def decide(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        """``image_id, box_id, x, y, w, h, code, prob`` of the boxes kept."""
        if self.level2 is not None:
            from kzjobs.level2.model import predict

            return predict(frames, self.level2)
        return top_class(frames)

    def recognize_pages(self, pages: Sequence[tuple[str, Image.Image]]) -> list[PageResult]:
        """Several pages at once: the networks read them one by one, level 2 decides for
        all of them in one call (on one page its fixed cost is two thirds of its time).
        A page's result does not depend on the pages it is read with."""
        results, frames_of_pages = [], []
        for image_id, image in pages:
            results.append(PageResult(image_id, image.width, image.height))
            boxes = self.detect(image)
            if boxes:
                frames_of_pages.append(self.classify(image_id, image, boxes))
        if not frames_of_pages:
            return results
        decided = self.decide(frames_per_model(frames_of_pages))
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

    def recognize_page(self, image_id: str, image: Image.Image) -> PageResult:
        return self.recognize_pages([(image_id, image)])[0]

    def recognize_stream(self, pages: Iterable[tuple[str, Image.Image]], batch: int
                         ) -> Iterator[tuple[PageResult, Image.Image]]:
        """Each page's result with its image, ``batch`` pages to a level-2 call; ``pages``
        is read lazily, so memory holds one batch whatever the collection's size."""
        chunk: list[tuple[str, Image.Image]] = []
        for page in pages:
            chunk.append(page)
            if len(chunk) == batch:
                yield from zip(self.recognize_pages(chunk), (im for _, im in chunk), strict=True)
                chunk = []
        if chunk:
            yield from zip(self.recognize_pages(chunk), (im for _, im in chunk), strict=True)


def frames_per_model(frames_of_pages: Sequence[Sequence[pd.DataFrame]]) -> list[pd.DataFrame]:
    """Per-page prediction frames (one per classifier) joined into one frame per classifier."""
    import pandas as pd

    return [pd.concat(parts, ignore_index=True) for parts in zip(*frames_of_pages, strict=True)]


def top_class(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The blend's best class per box; its confidence is the sigmoid of the margin
    between the top two blended logits (the quantity pseudolabelling thresholds)."""
    from kzjobs.blend import blend, top_two

    blended = blend(frames)
    code, top, second = top_two(blended)
    margin = np.nan_to_num(top - second, nan=top)
    decided = blended[["image_id", "box_id", "x", "y", "w", "h"]].assign(
        code=code, prob=1 / (1 + np.exp(-margin))
    )
    return decided[decided["code"] != SEG_FP].reset_index(drop=True)
