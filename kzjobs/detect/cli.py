"""``kzjobs detect train|predict``: inputs and outputs are store keys."""

from __future__ import annotations

from typing import Annotated

import typer

from kzjobs.options import ProfileOption, StoreOption, emit

detect_app = typer.Typer(
    help="Stage 1: the character detector (Faster R-CNN).", no_args_is_help=True
)

DatasetOption = Annotated[
    str, typer.Option("--dataset", help="Dataset key in the store, or a folder path/URI.")
]
FoldOption = Annotated[int, typer.Option("--fold", help="The fold whose books are held out.")]
ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
]


@detect_app.command()
def train(
    dataset: DatasetOption,
    folds: Annotated[str, typer.Option("--folds", help="Key of folds.json (`kzjobs folds`).")],
    fold: FoldOption,
    out: Annotated[str, typer.Option("--out", help="Key prefix for model.pt and metrics.json.")],
    store: StoreOption = None,
    profile: ProfileOption = "demo",
    progress: ProgressOption = True,
) -> None:
    """Train the detector on a fold's training books; resumes from its last epoch."""
    from kzjobs.detect.jobs import DetectTrainJob

    job = DetectTrainJob(store_uri=store, profile_name=profile, dataset=dataset, folds=folds,
                         fold=fold, out=out, progress=progress)
    emit(job.run())


@detect_app.command()
def predict(
    model: Annotated[str, typer.Option("--model", help="Key of the detector's model.pt.")],
    dataset: DatasetOption,
    out: Annotated[str, typer.Option("--out", help="Key of the boxes CSV (train.csv format).")],
    valid_only: Annotated[
        bool,
        typer.Option("--valid-only", help="Out-of-fold: the fold's validation books only, "
                     "each box labelled by IoU with the ground truth (else seg_fp)."),
    ] = False,
    folds: Annotated[
        str | None, typer.Option("--folds", help="Key of folds.json (with --valid-only).")
    ] = None,
    fold: Annotated[
        int | None, typer.Option("--fold", help="Fold (default: the model's own fold).")
    ] = None,
    store: StoreOption = None,
    profile: ProfileOption = "demo",
    progress: ProgressOption = True,
) -> None:
    """Detect character boxes on full pages; pages already done are skipped."""
    from kzjobs.detect.jobs import DetectPredictJob

    job = DetectPredictJob(store_uri=store, profile_name=profile, model=model, dataset=dataset,
                           out=out, valid_only=valid_only, folds=folds, fold=fold,
                           progress=progress)
    emit(job.run())
