"""``kzjobs classify train|predict``: the ROI classifier's jobs (heavy imports in bodies)."""

from __future__ import annotations

from typing import Annotated

import typer

from kzjobs.options import ProfileOption, StoreOption, emit

classify_app = typer.Typer(
    help="Stage 2: ROI classifiers over detector boxes.", no_args_is_help=True
)


@classify_app.command()
def train(
    kind: Annotated[str, typer.Option(help="Backbone: resnet18/34/50/101/152, resnext101_32x8d.")],
    fold: Annotated[int, typer.Option(help="The fold held out (its pages get OOF predictions).")],
    dataset: Annotated[str, typer.Option(help="Dataset key in the store, or a path/URI.")],
    folds: Annotated[str, typer.Option(help="Store key of the folds JSON.")],
    boxes: Annotated[str, typer.Option(help="Store key of the detector's OOF boxes (CSV).")],
    out: Annotated[
        str, typer.Option(help="Key prefix for model.pt, oof.parquet, metrics.json "
                          "(in a run: <run>/classify/<kind>/fold<K>).")
    ],
    epochs: Annotated[int | None, typer.Option(help="Override the profile's epochs.")] = None,
    pseudo: Annotated[
        str | None, typer.Option(help="Pseudolabel box file (CSV) of incoming pages to add.")
    ] = None,
    pseudo_dataset: Annotated[
        list[str] | None, typer.Option(help="Collection holding pseudolabelled pages (repeat).")
    ] = None,
    init: Annotated[
        str | None, typer.Option(help="A model.pt to fine-tune (fewer epochs, lower lr).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The model's name in its predictions (default: kind).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True,
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Train one classifier kind on one fold, then predict the fold's held-out pages."""
    from kzjobs.classify.jobs import ClassifyTrainJob

    emit(ClassifyTrainJob(store_uri=store, profile_name=profile, dataset=dataset, folds=folds,
                          boxes=boxes, kind=kind, fold=fold, out=out, epochs=epochs,
                          pseudo=pseudo, pseudo_datasets=pseudo_dataset or [], init=init,
                          name=name, progress=progress).run())


@classify_app.command()
def predict(
    model: Annotated[str, typer.Option(help="Store key of a classifier model.pt.")],
    dataset: Annotated[str, typer.Option(help="Dataset or collection key, or a path/URI.")],
    boxes: Annotated[str, typer.Option(help="Store key of the box file (CSV).")],
    out: Annotated[str, typer.Option(help="Store key of the predictions parquet.")],
    scale: Annotated[
        list[float] | None, typer.Option(help="TTA scale (repeat); default: the profile's.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True,
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Top-k classes and logits for every box; bad pages are quarantined, re-runs resume."""
    from kzjobs.classify.jobs import ClassifyPredictJob

    emit(ClassifyPredictJob(store_uri=store, profile_name=profile, model=model, dataset=dataset,
                            boxes=boxes, out=out, scales=tuple(scale) if scale else None,
                            progress=progress).run())
