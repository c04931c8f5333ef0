"""A dataset or incoming collection in the competition's layout, inside a store.

Accepts both layouts: the competition's (``train_images/``, ``test_images/``) and
the synthetic one (``images/``). An incoming collection has images only. Its pages are
read through :class:`kzjobs.data.collection.Collection`: page images, PDFs, multi-page
TIFFs and IIIF manifests alike.
"""

from __future__ import annotations

from functools import cached_property

from PIL import Image

from kzjobs.core.store import Store, open_store
from kzjobs.data.collection import IMAGE_DIRS, Collection, PageRef
from kzjobs.data.format import Box, read_annotations, read_translation

__all__ = ["IMAGE_DIRS", "Dataset"]


class Dataset:
    def __init__(self, store: Store, image_dirs: tuple[str, ...] = IMAGE_DIRS) -> None:
        self.store = store
        self.image_dirs = image_dirs

    @classmethod
    def from_folder(cls, path: str) -> Dataset:
        """A plain folder of images (``kzjobs recognize --images DIR``)."""
        return cls(open_store(path), image_dirs=("",))

    @classmethod
    def open(cls, ref: str, store: Store | None = None) -> Dataset:
        """``ref`` is a key inside ``store``, or a folder path / ``s3://`` URI of its own."""
        if "://" in ref or ref.startswith(("/", ".", "~")) or store is None:
            return cls(open_store(ref))
        return cls(store.child(ref))

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def labelled(self) -> bool:
        return self.store.exists("train.csv")

    @cached_property
    def annotations(self) -> dict[str, list[Box]]:
        return read_annotations(self.store.read_bytes("train.csv"))

    @cached_property
    def vocabulary(self) -> dict[str, str]:
        return read_translation(self.store.read_bytes("unicode_translation.csv"))

    @cached_property
    def collection(self) -> Collection:
        return Collection(self.store, self.image_dirs)

    @cached_property
    def pages(self) -> dict[str, PageRef]:
        """``{image_id: page}`` for every page the collection's files hold."""
        return self.collection.scan.by_id

    @cached_property
    def image_keys(self) -> dict[str, str]:
        """``{image_id: key}`` for every page that is an image file of its own."""
        return {i: p.key for i, p in self.pages.items() if p.book is None}

    def image_ids(self) -> list[str]:
        """Labelled ids in ``train.csv`` order, else every page, sorted."""
        return list(self.annotations) if self.labelled else sorted(self.pages)

    def read_image(self, image_id: str) -> Image.Image:
        try:
            page = self.pages[image_id]
        except KeyError:
            raise KeyError(f"no image for {image_id!r} in {self.uri}") from None
        return self.collection.read(page)
