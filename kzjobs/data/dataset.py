"""A dataset or incoming collection in the competition's layout, inside a store.

Accepts both layouts: the competition's (``train_images/``, ``test_images/``) and
the synthetic one (``images/``). An incoming collection has images only.
"""

from __future__ import annotations

from functools import cached_property

from PIL import Image

from kzjobs.data.format import Box, read_annotations, read_translation
from kzjobs.images import open_image
from kzjobs.store import Store, key_name, open_store

IMAGE_DIRS = ("images", "train_images", "test_images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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
    def image_keys(self) -> dict[str, str]:
        """``{image_id: key}`` for every image file, whichever layout holds it."""
        keys: dict[str, str] = {}
        for folder in self.image_dirs:
            for key in self.store.list(folder):
                if not folder and "/" in key:
                    continue  # a plain folder: its own files only
                name = key_name(key)
                stem, dot, suffix = name.rpartition(".")
                if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES:
                    keys.setdefault(stem, key)
        return keys

    def image_ids(self) -> list[str]:
        """Labelled ids in ``train.csv`` order, else every image, sorted."""
        return list(self.annotations) if self.labelled else sorted(self.image_keys)

    def read_image(self, image_id: str) -> Image.Image:
        try:
            key = self.image_keys[image_id]
        except KeyError:
            raise KeyError(f"no image for {image_id!r} in {self.uri}") from None
        return open_image(self.store.read_bytes(key))
