"""``kzjobs validate annotations|batch|predictions``: GX suites, a report and a quarantine.

Exit code 0 when the job ran, even with quarantined items (they are in the report);
2 with a message on stderr when the input as a whole is unusable.
"""

from __future__ import annotations

from typing import Annotated

import typer

from kzjobs.options import ProfileOption, StoreOption, emit

validate_app = typer.Typer(
    help="Validate training annotations, an incoming batch, or predictions (quarantine bad items).",
    no_args_is_help=True,
)

DatasetArg = Annotated[str, typer.Argument(help="Dataset key in the store, or a path/URI.")]
OutOption = Annotated[
    str,
    typer.Option(help="Store prefix for report.json, quarantine.json, passed.json "
                 "(default: validation/<kind>/<name>)."),
]


def _run(kind: str, dataset: str, out: str, store: str | None, profile: str, **more: str) -> None:
    from kzjobs.validate.facts import UnusableInput
    from kzjobs.validate.job import ValidateJob

    job = ValidateJob(
        store_uri=store, profile_name=profile, dataset=dataset, kind=kind, out=out, **more
    )
    try:
        emit(job.run())
    except UnusableInput as exc:
        typer.echo(f"error: unusable input: {exc}", err=True)
        raise typer.Exit(2) from None


@validate_app.command()
def annotations(
    dataset: DatasetArg,
    out: OutOption = "",
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """train.csv: label grammar, code points, boxes on the page, ids, and the images."""
    _run("annotations", dataset, out, store, profile)


@validate_app.command()
def batch(
    dataset: DatasetArg,
    out: OutOption = "",
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """An incoming collection (a folder, store key, s3:// URI or IIIF manifest URL): every
    page of its images, PDFs, TIFFs and manifests decodes, within limits, with a safe unique
    id; every file it cannot read is quarantined with its reason."""
    _run("batch", dataset, out, store, profile)


@validate_app.command()
def predictions(
    dataset: DatasetArg,
    predictions: Annotated[
        str, typer.Option("--predictions", help="Submission CSV: store key or path/URI.")
    ],
    vocabulary: Annotated[
        str,
        typer.Option(help="unicode_translation.csv (key or path); default: the dataset's."),
    ] = "",
    out: OutOption = "",
    store: StoreOption = None,
    profile: ProfileOption = "demo",
) -> None:
    """A submission for a collection: grammar, vocabulary, points on the page, ids known."""
    _run("predictions", dataset, out, store, profile, predictions=predictions,
         vocabulary=vocabulary)
