"""The ``kzjobs synth`` job: write synthetic books into the store."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from kzjobs.core.job import Cli, Job


class SynthJob(Job):
    out: Annotated[str, Cli(argument=True)] = Field(
        description="Output dataset: a store key, folder or s3:// URI.")
    books: int = Field(default=4, ge=1, description="Number of books.")
    pages_per_book: int = Field(default=5, ge=1, description="Pages per book.")
    seed: int = Field(default=0, ge=0, description="Seed: same seed, same bytes.")
    fonts: list[str] | None = Field(
        default=None, description="Font ids, repeated or comma-separated (default: all).")
    labelled: Annotated[bool, Cli(("--labelled/--unlabelled",))] = Field(
        default=True, description="Labels too, or images only, as an incoming collection.")
    book_prefix: str | None = Field(
        default=None, description="Lower-case letters before book names (default: seed).")
    start_book: int = Field(default=0, ge=0, description="Index of the first book's name.")
    vocabulary_size: int | None = Field(
        default=None, ge=1,
        description="Draw only the N most frequent code points (default: all 3,119).")
    text: Literal["shared", "per_book"] = Field(
        default="per_book", description="per_book: each book its own text (words with a "
        "topic of its own); shared: every book from one frequency list (unit tests).")
    progress: bool = Field(default=False, description="Progress bar on stderr.")

    @field_validator("fonts", mode="before")
    @classmethod
    def _fonts(cls, value: Any) -> list[str] | None:
        """``--fonts a,b`` as ``--fonts a --fonts b``; none given: every font."""
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        return [f.strip() for item in items for f in item.split(",") if f.strip()] or None

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
