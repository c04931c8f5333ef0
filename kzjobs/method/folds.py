"""The folds job: books to folds, written once per run so every stage agrees."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kzjobs.core.job import Cli, Job
from kzjobs.data.books import assign_folds
from kzjobs.data.dataset import Dataset


class FoldsJob(Job):
    dataset: Annotated[str, Cli(argument=True)] = Field(
        description="Dataset key in the store, or a path/URI.")
    out: str = Field("", description="Store key of the folds JSON.")

    def run(self) -> dict[str, Any]:
        ds = Dataset.open(self.dataset, self.store)
        n = self.profile.data.n_folds
        folds = assign_folds(ds.image_ids(), n)
        if len(folds) < n:  # a fold without books has nothing to validate on
            raise ValueError(f"{ds.uri}: {len(folds)} book(s) for {n} folds: "
                             "each fold needs at least one book")
        result = {"n_folds": n, "books": folds}
        if self.out:
            self.store.write_json(self.out, result)
        return result | {"out": self.out}


def load_folds(store: Any, key: str) -> dict[str, int]:
    """``{book: fold}`` from a folds JSON written by :class:`FoldsJob`."""
    return {b: int(f) for b, f in store.read_json(key)["books"].items()}
