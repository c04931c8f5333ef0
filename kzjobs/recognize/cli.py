"""``kzjobs recognize``: read a collection; ``kzjobs recognize merge``: merge its shards."""

from __future__ import annotations

from typing import Annotated

import typer

from kzjobs.export import parse_formats
from kzjobs.options import StoreOption, emit
from kzjobs.recognize import PAGES_PER_BATCH

recognize_app = typer.Typer(
    help="Recognize a collection with a blend (a bundle or models:/kz-recognizer@champion).",
    invoke_without_command=True,
    no_args_is_help=False,
)

Collection = Annotated[
    str | None,
    typer.Option(help="Collection: a store key, folder, s3:// URI or IIIF manifest URL."),
]
Images = Annotated[str | None, typer.Option(
    help="A plain folder of pages instead (images, PDFs, TIFFs, IIIF manifests), or one "
    "such file.")]
Manifest = Annotated[str | None, typer.Option(
    help="A IIIF manifest URL instead: its canvases are the pages (same as --collection URL).")]
Out = Annotated[str, typer.Option(help="Output prefix: a store key, folder or s3:// URI.")]
Validation = Annotated[
    str | None,
    typer.Option(help="Prefix of a `kzjobs validate batch` run: read only its passed pages."),
]


def _formats(value: str) -> str:
    try:
        return ",".join(parse_formats(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


Formats = Annotated[str, typer.Option(
    callback=_formats, help="Library formats to write at merge, comma-separated: alto, "
    "page (PAGE XML), tei, iiif (annotations; a manifest copy for manifest input), "
    "pdf (searchable, one per book); or all.")]
BaseUrl = Annotated[str | None, typer.Option(
    help="Public URL the output prefix is served at, for IIIF ids (default: its own URI).")]


@recognize_app.callback()
def recognize(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Bundle key/path or models:/ URI.")] = None,
    collection: Collection = None,
    images: Images = None,
    manifest: Manifest = None,
    out: Out = "",
    shard: Annotated[str, typer.Option(help="i/n: this job's share of the pages.")] = "0/1",
    batch: Annotated[int, typer.Option(
        help="Pages read before level 2 decides for them in one call.")] = PAGES_PER_BATCH,
    workers: Annotated[int, typer.Option(
        help="Pages read side by side in threads, sharing the models (0: one per torch "
        "CPU thread, up to 8; 1 on a GPU).")] = 0,
    validation: Validation = None,
    formats: Formats = "",
    base_url: BaseUrl = None,
    adapt: Annotated[bool | None, typer.Option(
        "--adapt/--no-adapt", help="Fit each book's class shifts on its own pages, reading "
        "them in two passes; without, the model's own shifts for the books it adapted to "
        "(default: the model's pseudo.class_shift).",
        show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    store: StoreOption = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", "-p", help="Override the bundle's own inference settings "
        "(tiny, demo, bench, full or a YAML).")] = None,
) -> None:
    """Recognize every page; with one shard, also merge the outputs."""
    if ctx.invoked_subcommand is not None:
        return
    if not model or not out:
        raise typer.BadParameter("--model and --out are required")
    from kzjobs.recognize.job import RecognizeJob

    if manifest and collection:
        raise typer.BadParameter("give --manifest or --collection, not both")
    collection = collection or manifest
    emit(RecognizeJob(store_uri=store, profile_name=profile, model=model, collection=collection,
                      images=images, out=out, shard=shard, batch=batch,
                      workers=workers, validation=validation, adapt=adapt,
                      device=device, formats=formats, base_url=base_url).run())


@recognize_app.command("merge")
def merge_command(
    collection: Collection = None,
    images: Images = None,
    manifest: Manifest = None,
    out: Out = "",
    validation: Validation = None,
    formats: Formats = "",
    base_url: BaseUrl = None,
    store: StoreOption = None,
) -> None:
    """Merge every shard's pages into submission.csv, the review index, report.json and
    the --formats asked for."""
    from kzjobs.recognize.job import MergeJob

    emit(MergeJob(store_uri=store, collection=collection or manifest, images=images, out=out,
                  validation=validation, formats=formats, base_url=base_url).run())
