"""Every job is a command whose options are its fields, and a plan's arguments are the
same options: a job's inputs are declared once, on the Job."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kzjobs.cli import app, build
from kzjobs.commands import COMMANDS, Group, JobCommand, argv, find, load, options, walk
from kzjobs.core.job import Job

ROOT = Path(__file__).resolve().parents[1]


def _job_classes() -> set[str]:
    """``module:Class`` of every concrete Job subclass declared in kzjobs/, read with ast
    (a job added without a command fails here, even if nothing imports its module)."""
    declared: dict[str, tuple[str, list[str]]] = {}
    for path in sorted((ROOT / "kzjobs").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
                declared[node.name] = (module, bases)

    def is_job(name: str) -> bool:
        return name == "Job" or any(is_job(b) for b in declared.get(name, ("", []))[1])

    return {f"{module}:{name}" for name, (module, _) in declared.items()
            if name != "Job" and not name.startswith("_") and is_job(name)}


def _click(path: str) -> typer.core.TyperCommand:
    """The click command ``kzjobs <path>`` runs, resolved as the CLI resolves it."""
    ctx = typer.Context(typer.main.get_command(app))
    names = path.split()
    entries = COMMANDS
    entry = None
    for name in names:
        entry = next(e for e in entries if e.name == name)
        entries = entry.commands if isinstance(entry, Group) else ()
    command = build(entry)
    assert command.name == names[-1]
    return command.make_context(names[-1], ["--help"], parent=ctx, resilient_parsing=True).command


def test_every_job_has_a_command():
    targets = {c.target for _, c in walk() if isinstance(c, JobCommand)}
    assert _job_classes() - targets == set(), "a Job without a command: add it to COMMANDS"
    assert targets <= _job_classes()  # and no command names a job that is gone


@pytest.mark.parametrize("path", [p for p, c in walk() if isinstance(c, JobCommand)])
def test_a_job_command_takes_every_field(path):
    command = find(path)
    job = load(command.target)
    assert issubclass(job, Job)
    params = {p.name: p for p in _click(path).params}
    for opt in options(job, command):
        param = params.pop(opt.field)
        assert opt.info.description, f"{job.__name__}.{opt.field} has no help"
        if param.param_type_name == "option":
            spelled = [n for n in [*param.opts, *param.secondary_opts]]
            assert spelled == [n for s in opt.names for n in s.split("/")]
            assert param.help == opt.info.description
    params.pop("help", None)
    assert params == {} or set(params) == {"ctx"}
    # A job's fields are options unless the command fixes them (validate's kind) or,
    # having a default, leaves them out.
    left = set(job.model_fields) - {o.field for o in options(job, command)}
    assert left <= set(command.fixed) | set(command.omit)
    assert all(not job.model_fields[f].is_required() for f in command.omit)


def test_every_field_of_a_job_is_an_option_of_one_of_its_commands():
    seen: dict[str, set[str]] = {}
    for _, command in walk():
        if isinstance(command, JobCommand):
            fields = {o.field for o in options(load(command.target), command)}
            seen.setdefault(command.target, set()).update(fields | set(command.fixed))
    for target, fields in seen.items():
        assert set(load(target).model_fields) == fields, target


def test_plan_arguments_run_the_same_job():
    """``argv`` (the plans' arguments) parsed by the CLI gives back the job's fields."""
    fields = {"kind": "resnet18", "fold": 1, "dataset": "d", "folds": "r/folds.json",
              "boxes": "r/oof.csv", "out": "r/c", "pseudo_datasets": ["a", "b"],
              "epochs": 2, "progress": False, "profile_name": "tiny"}
    args = argv("classify train", **fields)
    assert args[args.index("--pseudo-dataset") + 1:][:3] == ["a", "--pseudo-dataset", "b"]
    assert "--no-progress" in args and args[-2:] == ["--profile", "tiny"]
    ctx = _click("classify train").make_context("train", args)
    assert {k: v for k, v in ctx.params.items() if k in fields} == {
        **fields, "pseudo_datasets": ["a", "b"]}

    merge = argv("recognize merge", collection="c", out="o", formats=["pdf", "alto"])
    assert merge == ["--collection", "c", "--out", "o", "--formats", "alto,pdf"]
    assert argv("merge-boxes", inputs=["a.csv", "b.csv"], out="all.csv") == [
        "a.csv", "b.csv", "--out", "all.csv"]
    assert argv("validate batch", dataset="in/c", out="v") == ["in/c", "--out", "v"]
    assert argv("synth", out="ds", labelled=False, fonts="a,b") == [
        "ds", "--fonts", "a", "--fonts", "b", "--unlabelled"]
    with pytest.raises(ValueError, match="fold"):
        argv("classify train", **(fields | {"fold": -1}))  # validated by the job


def test_bad_values_are_usage_errors_naming_the_option(tmp_path):
    result = CliRunner().invoke(app, ["recognize", "merge", "--collection", "c", "--out", "o",
                                      "--formats", "hocr", "--store", str(tmp_path)])
    assert result.exit_code == 2 and "--formats" in result.output and "hocr" in result.output
    result = CliRunner().invoke(app, ["recognize", "--collection", "c", "--store", str(tmp_path)])
    assert result.exit_code == 2 and "--out and --model are required" in result.output


def test_listing_commands_imports_no_job(tmp_path):
    """``kzjobs --help`` and a group's help list commands without importing their jobs."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from kzjobs.cli import app; "
            "r = CliRunner().invoke(app, sys.argv[1:]); assert r.exit_code == 0, r.output; "
            "import json; print(json.dumps(sorted(m for m in sys.modules "
            "if m.endswith(('.jobs', '.job')) or m in ('torch', 'numpy'))))")
    for args in (["--help"], ["classify", "--help"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                             text=True, check=True, cwd=ROOT).stdout
        assert json.loads(out.splitlines()[-1]) == ["kzjobs.core.job"]
