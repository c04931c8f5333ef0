"""The ``kzjobs`` command: every step is a job, and this is the job container's entry point.

The commands are ``kzjobs.commands.COMMANDS``; a job's typer command is made from its
fields here. A command's module is imported only when that command runs, so ``--help``
and the DAG launcher stay fast.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin

import typer
from pydantic import ValidationError
from typer.core import TyperCommand, TyperGroup

from kzjobs.commands import COMMANDS, Command, Group, JobCommand, Option, load, options
from kzjobs.core.options import emit


def _type(opt: Option) -> tuple[Any, bool]:
    """The option's type for typer, and whether it repeats (a list field)."""
    annotation = opt.info.annotation
    if isinstance(annotation, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else annotation
    if get_origin(annotation) in (list, tuple, set):
        return (str, False) if opt.cli.sep else (list[get_args(annotation)[0]], True)
    return annotation, False


def _parameter(opt: Option, command: JobCommand, optional: bool) -> inspect.Parameter:
    kind, repeats = _type(opt)
    required = opt.info.is_required() or opt.field in command.required
    if required and not optional:
        default: Any = inspect.Parameter.empty
    elif repeats or opt.cli.sep or required:
        default = None
    else:
        default = command.defaults.get(opt.field, opt.info.get_default(call_default_factory=True))
    if default is None:
        kind = kind | None
    info = (typer.Argument(help=opt.info.description) if opt.cli.argument else
            typer.Option(*opt.names, help=opt.info.description, envvar=opt.cli.envvar,
                         show_default=default is not None))
    return inspect.Parameter(opt.field, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, info])


def _bad_value(exc: ValidationError, opts: list[Option]) -> typer.BadParameter:
    """A field the job refused, as a usage error naming its option (exit 2)."""
    spelled = {o.field: o.names[0].partition("/")[0] for o in opts}
    return typer.BadParameter("; ".join(
        f"{spelled.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else ''}: {e['msg']}"
        for e in exc.errors()))


def job_function(command: JobCommand, *, callback: bool = False) -> Callable[..., None]:
    """A typer command (or a group's callback) whose parameters are the job's fields; it
    builds the job, runs it and prints its summary as JSON."""
    job = load(command.target)
    opts = options(job, command)
    params = [_parameter(o, command, optional=callback) for o in opts]
    if callback:  # a group's job: its options must not be required of its sub-commands
        params.insert(0, inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                           annotation=typer.Context))
    unusable = load(command.unusable) if command.unusable else ()

    def run(ctx: typer.Context | None = None, **values: Any) -> None:
        if ctx is not None and ctx.invoked_subcommand is not None:
            return
        missing = [o.names[0] for o in opts if o.info.is_required() and values[o.field] is None]
        if missing:
            raise typer.BadParameter(f"{' and '.join(missing)} "
                                     f"{'are' if len(missing) > 1 else 'is'} required")
        fields = dict(command.fixed)
        for opt in opts:
            value = values[opt.field]
            if value == "" and type(None) in get_args(opt.info.annotation):
                value = None  # an optional field given as "": none (`--alias ""`)
            if value is not None and not (isinstance(value, list | tuple) and not value):
                fields[opt.field] = value
        try:
            instance = job(**fields)
        except ValidationError as exc:
            raise _bad_value(exc, opts) from None
        try:
            emit(instance.run())
        except unusable as exc:
            typer.echo(f"error: unusable input: {exc}", err=True)
            raise typer.Exit(2) from None

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def _nothing() -> None:
    pass


def build(entry: Command | Group) -> TyperCommand:
    """The click command of a table entry (importing the module it runs)."""
    if isinstance(entry, Group):
        text = f"{entry.help}\n\n{entry.job.help}" if entry.job else entry.help
        sub = typer.Typer(name=entry.name, help=text, cls=group_class(entry.commands),
                          add_completion=False, no_args_is_help=entry.job is None,
                          invoke_without_command=entry.job is not None)
        sub.callback()(job_function(entry.job, callback=True) if entry.job else _nothing)
        return typer.main.get_command(sub)
    sub = typer.Typer(add_completion=False)
    function = job_function(entry) if isinstance(entry, JobCommand) else load(entry.target)
    sub.command(entry.name, help=entry.help)(function)
    return typer.main.get_command(sub)


class _Lazy(TyperCommand):
    """A command listed with its name and help; built (its module imported) when it runs."""

    def __init__(self, entry: Command | Group) -> None:
        super().__init__(entry.name, help=entry.help)
        self.entry = entry

    def make_context(self, info_name: str | None, args: list[str],
                     parent: typer.Context | None = None, **extra: Any) -> typer.Context:
        return build(self.entry).make_context(info_name, args, parent=parent, **extra)


def group_class(entries: tuple[Command | Group, ...]) -> type[TyperGroup]:
    """A typer group class that lists ``entries`` as lazily built commands."""

    class Lazy(TyperGroup):
        def __init__(self, **attrs: Any) -> None:
            super().__init__(**attrs)
            for entry in entries:
                self.add_command(_Lazy(entry))

    return Lazy


app = typer.Typer(
    name="kzjobs",
    help="Batch recognition and retraining for kuzushiji books.",
    cls=group_class(COMMANDS),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.callback()(_nothing)


def score(
    labels: Annotated[str, typer.Argument(help="train.csv-format ground truth (path or URI).")],
    submission: Annotated[str, typer.Argument(help="Submission CSV (path or URI).")],
    by_book: Annotated[bool, typer.Option("--by-book", help="Also report per book.")] = False,
    detection: Annotated[
        bool, typer.Option("--detection", help="Ignore the code point (detection-only F1).")
    ] = False,
) -> None:
    from kzjobs.core.store import read_uri
    from kzjobs.data.format import read_annotations, read_submission
    from kzjobs.method.metric import score as score_pages

    truth = read_annotations(read_uri(labels))
    preds = read_submission(read_uri(submission))
    emit(score_pages(truth, preds, ignore_code=detection).as_dict(by_book=by_book))


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
