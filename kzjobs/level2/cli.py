"""``kzjobs level2 train|predict``: heavy modules are imported inside the commands."""

from __future__ import annotations

from typing import Annotated

import typer

from kzjobs.options import ProfileOption, StoreOption, emit

level2_app = typer.Typer(
    help="Level 2: LightGBM + XGBoost over every kind's top-3, leave-one-fold-out.",
    no_args_is_help=True,
)


@level2_app.command()
def train(
    run: Annotated[str, typer.Option(help="Training run prefix (classify/ and detect/ OOF).")],
    out: Annotated[str, typer.Option(help="Model prefix; default <run>/level2.")] = "",
    dataset: Annotated[str, typer.Option(
        help="Labelled dataset key: its vocabulary, and the competition F1.")] = "",
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="Classifier kinds to use (repeatable); default: all in the run.")] = None,
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Train level 2 leave-one-fold-out on a run's OOF predictions and report OOF figures."""
    from kzjobs.level2.jobs import Level2TrainJob

    emit(Level2TrainJob(store_uri=store, profile_name=profile, run_prefix=run, out=out,
                        dataset=dataset, kinds=list(kind or [])).run())


@level2_app.command()
def predict(
    model: Annotated[str, typer.Option(help="Level-2 model prefix (holds meta.json).")],
    preds: Annotated[list[str], typer.Option(
        "--preds", help="Prediction parquet key or prefix (repeatable): all kinds and folds.")],
    out: Annotated[str, typer.Option(help="Store key of the per-box winners (parquet).")],
    submission: Annotated[str, typer.Option(help="Also write a submission CSV here.")] = "",
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """The winning code and probability of every box; seg_fp winners are dropped."""
    from kzjobs.level2.jobs import Level2PredictJob

    emit(Level2PredictJob(store_uri=store, profile_name=profile, model=model,
                          preds=list(preds), out=out, submission=submission).run())
