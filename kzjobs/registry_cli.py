"""``kzjobs bundle|evaluate|register|promote``: from a training run to the champion.

Heavy modules (mlflow, torch) are imported inside the commands.
"""

from __future__ import annotations

from typing import Annotated

import typer

from kzjobs.options import ProfileOption, StoreOption, emit


def bundle(
    run: Annotated[str, typer.Option(help="Training run prefix: becomes the bundle's root.")],
    dataset: Annotated[str, typer.Option(help="The run's training dataset (its vocabulary).")],
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Write bundle.json for a run's blend (detector, classifiers, level 2, vocabulary)."""
    from kzjobs.release import BundleJob

    emit(BundleJob(store_uri=store, profile_name=profile, run_prefix=run, dataset=dataset).run())


def evaluate(
    model: Annotated[str, typer.Option(help="Bundle key/path or models:/kz-recognizer@alias.")],
    dataset: Annotated[str, typer.Option(help="Labelled held-out dataset.")],
    out: Annotated[str, typer.Option(help="Store key of the evaluation JSON.")],
    predictions: Annotated[
        str, typer.Option(help="Store prefix of the recognition outputs; default: beside --out.")
    ] = "",
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Competition F1 of a blend on held-out books, overall and per book."""
    from kzjobs.evaluate import EvaluateJob

    emit(EvaluateJob(store_uri=store, profile_name=profile, model=model, dataset=dataset,
                     out=out, predictions=predictions).run())


def register(
    bundle: Annotated[str, typer.Option(help="Store key of the bundle root (bundle.json).")],
    evaluation: Annotated[str, typer.Option(help="Store key of the held-out evaluation JSON.")],
    dataset: Annotated[str, typer.Option(help="The training dataset (its version is a tag).")],
    alias: Annotated[str, typer.Option(help="Alias for the new version.")] = "candidate",
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Register a bundle as a new kz-recognizer version (idempotent per bundle)."""
    from kzjobs.release import RegisterJob

    emit(RegisterJob(store_uri=store, profile_name=profile, bundle=bundle,
                     evaluation=evaluation, dataset=dataset, alias=alias or None).run())


def promote(
    version: Annotated[str, typer.Option(help="Version number or alias to promote.")] = (
        "candidate"
    ),
    heldout: Annotated[
        str, typer.Option(help="Held-out dataset; default: the version's 'heldout' tag.")
    ] = "",
    lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for the lock.")] = 600.0,
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """Move 'champion' to the version only if it beats the champion on the same books."""
    from kzjobs.promote import PromoteJob

    emit(PromoteJob(store_uri=store, profile_name=profile, version=version,
                    heldout=heldout or None, lock_timeout=lock_timeout).run())


def add_commands(app: typer.Typer) -> None:
    for fn in (bundle, evaluate, register, promote):
        app.command()(fn)
