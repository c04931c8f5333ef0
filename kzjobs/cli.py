"""The ``kzjobs`` command: every step is a job, and this is the job container's entry point.

Heavy modules (torch, pandas, GX) are imported inside the commands, so ``--help``
and the DAG launcher stay fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from kzjobs.options import ProfileOption, StoreOption, emit

app = typer.Typer(
    name="kzjobs",
    help="Batch recognition and retraining for kuzushiji books.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def score(
    labels: Annotated[str, typer.Argument(help="train.csv-format ground truth (path or URI).")],
    submission: Annotated[str, typer.Argument(help="Submission CSV (path or URI).")],
    by_book: Annotated[bool, typer.Option("--by-book", help="Also report per book.")] = False,
    detection: Annotated[
        bool, typer.Option("--detection", help="Ignore the code point (detection-only F1).")
    ] = False,
) -> None:
    """Competition F1 of a submission against labels, as JSON."""
    from kzjobs.data.format import read_annotations, read_submission
    from kzjobs.metric import score as score_pages
    from kzjobs.store import read_uri

    truth = read_annotations(read_uri(labels))
    preds = read_submission(read_uri(submission))
    emit(score_pages(truth, preds, ignore_code=detection).as_dict(by_book=by_book))


@app.command()
def folds(
    dataset: Annotated[str, typer.Argument(help="Dataset key in the store, or a path/URI.")],
    out: Annotated[str, typer.Option(help="Store key of the folds JSON.")] = "",
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Split a dataset's books into the profile's folds (deterministic)."""
    from kzjobs.folds import FoldsJob

    emit(FoldsJob(store_uri=store, profile_name=profile, dataset=dataset, out=out).run())


def main() -> None:
    app()
