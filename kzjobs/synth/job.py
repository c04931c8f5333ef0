"""The ``kzjobs synth`` job: write synthetic books into the store."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kzjobs.job import Job


class SynthJob(Job):
    out: str  # a key in the store, or a folder / s3:// URI of its own
    books: int = Field(default=4, ge=1)
    pages_per_book: int = Field(default=5, ge=1)
    seed: int = Field(default=0, ge=0)
    fonts: list[str] | None = None
    labelled: bool = True
    book_prefix: str | None = None
    start_book: int = Field(default=0, ge=0)
    vocabulary_size: int | None = Field(
        default=None, ge=1, description="Draw only the N most frequent code points "
        "(default: all 3,119).")
    text: Literal["shared", "per_book"] = Field(
        default="per_book", description="per_book: each book its own text (words with a "
        "topic of its own); shared: every book from one frequency list (unit tests).")
    progress: bool = False

    def run(self) -> dict[str, Any]:
        from kzjobs.data.dataset import Dataset
        from kzjobs.synth import generate

        # The same rule as every dataset argument: a key in the store, else a path/URI.
        out = Dataset.open(self.out, self.store).store
        return generate(
            out,
            books=self.books,
            pages_per_book=self.pages_per_book,
            seed=self.seed,
            fonts=self.fonts,
            labelled=self.labelled,
            book_prefix=self.book_prefix,
            start_book=self.start_book,
            vocabulary_size=self.vocabulary_size,
            text=self.text,
            progress=self.progress,
        )
