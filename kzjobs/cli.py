"""The ``kzjobs`` command: every step is a job, and this is the job container's entry point.

Heavy modules (torch, pandas, GX) are imported inside the commands, so ``--help``
and the DAG launcher stay fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from kzjobs.classify.cli import classify_app
from kzjobs.demo import command as demo_command
from kzjobs.detect.cli import detect_app
from kzjobs.level2.cli import level2_app
from kzjobs.oof import command as merge_boxes_command
from kzjobs.options import ProfileOption, StoreOption, emit
from kzjobs.pseudo import command as pseudo_command
from kzjobs.recognize.cli import recognize_app
from kzjobs.registry_cli import add_commands as add_registry_commands
from kzjobs.validate.cli import validate_app

app = typer.Typer(
    name="kzjobs",
    help="Batch recognition and retraining for kuzushiji books.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(validate_app, name="validate")
app.add_typer(classify_app, name="classify")
app.add_typer(detect_app, name="detect")
app.add_typer(level2_app, name="level2")
app.add_typer(recognize_app, name="recognize")
app.command("pseudo")(pseudo_command)
add_registry_commands(app)
app.command("merge-boxes")(merge_boxes_command)
app.command("demo")(demo_command)


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


@app.command()
def synth(
    out: Annotated[str, typer.Argument(help="Output dataset: a store key, folder or s3:// URI.")],
    books: Annotated[int, typer.Option(help="Number of books.")] = 4,
    pages_per_book: Annotated[int, typer.Option(help="Pages per book.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same bytes.")] = 0,
    fonts: Annotated[
        list[str] | None,
        typer.Option("--fonts", help="Font ids, repeated or comma-separated (default: all)."),
    ] = None,
    unlabelled: Annotated[
        bool, typer.Option("--unlabelled", help="Images only, as an incoming collection.")
    ] = False,
    book_prefix: Annotated[
        str | None, typer.Option(help="Lower-case letters before book names (default: seed).")
    ] = None,
    start_book: Annotated[int, typer.Option(help="Index of the first book's name.")] = 0,
    vocabulary_size: Annotated[int | None, typer.Option(
        help="Draw only the N most frequent code points (default: all 2,312).")] = None,
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Write synthetic kuzushiji-like books in the competition's layout."""
    from kzjobs.synth.job import SynthJob

    font_ids = [f.strip() for item in fonts or [] for f in item.split(",") if f.strip()]
    job = SynthJob(store_uri=store, profile_name=profile, out=out, books=books,
                   pages_per_book=pages_per_book, seed=seed, fonts=font_ids or None,
                   labelled=not unlabelled, book_prefix=book_prefix, start_book=start_book,
                   vocabulary_size=vocabulary_size, progress=True)
    emit(job.run())


@app.command()
def pretrain(
    out: Annotated[str, typer.Option(
        help="Output: a store key, or a folder / s3:// URI (./folder for a local one).")
    ] = "runs/retrain/pretrained",
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="Classifier kinds (default: the profile's pretrain.kinds).")] = None,
    steps: Annotated[int | None, typer.Option(help="Steps (default: the profile's).")] = None,
    register: Annotated[bool, typer.Option(
        help="Log the weights to MLflow and register a kz-pretrained version.")] = True,
    force: Annotated[bool, typer.Option(help="Train even when the weights are fresh.")] = False,
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Pretrain classifier trunks (and heads) on rendered glyph crops: starting weights."""
    from kzjobs.pretrain.job import PretrainJob

    emit(PretrainJob(store_uri=store, profile_name=profile, out=out, kinds=kind or None,
                     steps=steps, register_model=register, force=force).run())


def main() -> None:
    # A job's process: the package's INFO lines (pages done, epochs resumed) go to stderr,
    # the task's log; stdout stays the JSON summary. Other libraries keep their levels.
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("kzjobs")
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    app()
