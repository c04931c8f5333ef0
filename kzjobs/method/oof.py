"""Out-of-fold boxes: each fold's detector boxes (its validation books) joined in one file.

The classifiers train on every page's OOF boxes, and a page's boxes come from the one
detector that never saw its book, so a page found in two inputs is an error.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kzjobs.core.job import Cli, Job


class MergeBoxesJob(Job):
    inputs: Annotated[list[str], Cli(argument=True)] = Field(
        description="Box files (store keys, train.csv format) to join, e.g. "
        "detect/fold{K}/oof.csv.")
    out: str = Field(description="Store key of the joined box file.")

    def run(self) -> dict[str, Any]:
        from kzjobs.data.format import BOX_CODES, read_annotations, write_annotations

        pages: dict[str, Any] = {}
        source: dict[str, str] = {}
        for key in self.inputs:
            for image_id, boxes in read_annotations(self.store.read_bytes(key),
                                                    allow=BOX_CODES).items():
                if image_id in pages:
                    raise ValueError(
                        f"page {image_id!r} is in both {source[image_id]!r} and {key!r}: "
                        "out-of-fold box files must not overlap"
                    )
                pages[image_id], source[image_id] = boxes, key
        self.store.write_bytes(self.out, write_annotations(pages))
        return {"out": self.out, "inputs": len(self.inputs), "pages": len(pages),
                "boxes": sum(len(b) for b in pages.values())}

