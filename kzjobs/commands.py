"""Every ``kzjobs`` command, as data: its name, what it runs and its help.

A job command's options are its Job's fields (``kzjobs.core.job``): ``kzjobs.cli`` builds the
typer commands from them, and ``argv`` the DAG plans' arguments, by the same rules.
Targets are ``"module:name"`` strings, imported only when their command runs or its
arguments are built: a job's module may import torch, and ``kzjobs --help`` stays fast.
A new job is one ``JobCommand`` line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic.fields import FieldInfo

from kzjobs.core.job import Cli, Job


@dataclass(frozen=True)
class Command:
    """A plain typer function (``target``: ``module:function``), not a job."""

    name: str
    target: str
    help: str


@dataclass(frozen=True)
class JobCommand(Command):
    """A Job (``target``: ``module:Class``) whose fields are the command's options."""

    fixed: Mapping[str, Any] = field(default_factory=dict)  # fields the command sets itself
    omit: tuple[str, ...] = ()  # fields (with defaults) this command does not take
    required: tuple[str, ...] = ()  # fields with a default that this command requires
    defaults: Mapping[str, Any] = field(default_factory=dict)  # the CLI's, where not the field's
    # ``module:Exception`` meaning the input as a whole is unusable: exit 2 with its message.
    unusable: str | None = None


@dataclass(frozen=True)
class Group:
    """A sub-command group; ``job`` runs when no sub-command is given."""

    name: str
    help: str
    commands: tuple[Command | Group, ...]
    job: JobCommand | None = None  # its help follows the group's


_VALIDATE = {"unusable": "kzjobs.validate.facts:UnusableInput"}
_CHECKS_ONLY = ("predictions", "vocabulary")

COMMANDS: tuple[Command | Group, ...] = (
    Group("validate", "Validate training annotations, an incoming batch, or predictions "
          "(quarantine bad items).\n\nExit code 0 when the job ran, even with quarantined items "
          "(they are in the report); 2 with a message on stderr when the input as a whole is "
          "unusable.", (
              JobCommand("annotations", "kzjobs.validate.job:ValidateJob",
                         "train.csv: label grammar, code points, boxes on the page, ids, and "
                         "the images.", fixed={"kind": "annotations"}, omit=_CHECKS_ONLY,
                         **_VALIDATE),
              JobCommand("batch", "kzjobs.validate.job:ValidateJob",
                         "An incoming collection (a folder, store key, s3:// URI or IIIF "
                         "manifest URL): every page of its images, PDFs, TIFFs and manifests "
                         "decodes, within limits, with a safe unique id; every file it cannot "
                         "read is quarantined with its reason.",
                         fixed={"kind": "batch"}, omit=_CHECKS_ONLY, **_VALIDATE),
              JobCommand("predictions", "kzjobs.validate.job:ValidateJob",
                         "A submission for a collection: grammar, vocabulary, points on the "
                         "page, ids known.", fixed={"kind": "predictions"},
                         required=("predictions",), **_VALIDATE),
          )),
    Group("classify", "Stage 2: ROI classifiers over detector boxes.", (
        JobCommand("train", "kzjobs.classify.jobs:ClassifyTrainJob",
                   "Train one classifier kind on one fold, then predict the fold's held-out "
                   "pages."),
        JobCommand("predict", "kzjobs.classify.jobs:ClassifyPredictJob",
                   "Top-k classes and logits for every box; bad pages are quarantined, re-runs "
                   "resume."),
    )),
    Group("detect", "Stage 1: the character detector (Faster R-CNN).", (
        JobCommand("train", "kzjobs.detect.jobs:DetectTrainJob",
                   "Train the detector on a fold's training books; resumes from its last "
                   "epoch."),
        JobCommand("predict", "kzjobs.detect.jobs:DetectPredictJob",
                   "Detect character boxes on full pages; pages already done are skipped."),
    )),
    Group("level2", "Level 2: LightGBM + XGBoost over every kind's top-3, leave-one-fold-out.", (
        JobCommand("train", "kzjobs.level2.jobs:Level2TrainJob",
                   "Train level 2 leave-one-fold-out on a run's OOF predictions and report OOF "
                   "figures."),
        JobCommand("predict", "kzjobs.level2.jobs:Level2PredictJob",
                   "The winning code and probability of every box; seg_fp winners are "
                   "dropped."),
    )),
    Group("recognize", "Recognize a collection with a blend (a bundle or "
          "models:/kz-recognizer@champion).", (
              JobCommand("merge", "kzjobs.recognize.job:MergeJob",
                         "Merge every shard's pages into submission.csv, the review index, "
                         "report.json and the --formats asked for."),
          ), job=JobCommand("recognize", "kzjobs.recognize.job:RecognizeJob",
                            "Recognize every page; with one shard, also merge the outputs.")),
    JobCommand("pseudo", "kzjobs.method.pseudo:PseudoJob",
               "Pseudolabel an incoming collection: keep the blend's confident boxes as labels."),
    JobCommand("bundle", "kzjobs.release.jobs:BundleJob",
               "Write bundle.json for a run's blend (detector, classifiers, level 2, "
               "vocabulary)."),
    JobCommand("evaluate", "kzjobs.release.evaluate:EvaluateJob",
               "Competition F1 of a blend on held-out books, overall and per book."),
    JobCommand("register", "kzjobs.release.jobs:RegisterJob",
               "Register a bundle as a new kz-recognizer version (idempotent per bundle)."),
    JobCommand("promote", "kzjobs.release.promote:PromoteJob",
               "Move 'champion' to the version only if it beats the champion on the same "
               "books."),
    JobCommand("merge-boxes", "kzjobs.method.oof:MergeBoxesJob",
               "Join per-fold out-of-fold box files into one (a page may appear only once)."),
    Command("demo", "kzjobs.demo:command",
            "Retrain -> promote -> recognize through Airflow on this machine (var/)."),
    Command("score", "kzjobs.cli:score", "Competition F1 of a submission against labels, as JSON."),
    JobCommand("folds", "kzjobs.method.folds:FoldsJob",
               "Split a dataset's books into the profile's folds (deterministic)."),
    JobCommand("synth", "kzjobs.synth.job:SynthJob",
               "Write synthetic kuzushiji-like books in the competition's layout.",
               defaults={"progress": True}),
    JobCommand("pretrain", "kzjobs.pretrain.job:PretrainJob",
               "Pretrain classifier trunks (and heads) on rendered glyph crops: starting weights."),
)


def load(target: str) -> Any:
    """The object a ``module:name`` target names (importing its module)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def walk(entries: tuple[Command | Group, ...] = COMMANDS,
         prefix: str = "") -> Iterator[tuple[str, Command]]:
    """(``"classify train"``, its command) for every command; a group's own job is the
    group's name."""
    for entry in entries:
        path = f"{prefix}{entry.name}"
        if isinstance(entry, Group):
            if entry.job:
                yield path, entry.job
            yield from walk(entry.commands, f"{path} ")
        else:
            yield path, entry


def find(path: str) -> JobCommand:
    """The job command ``kzjobs <path>`` runs (``"validate batch"``)."""
    for name, command in walk():
        if name == path and isinstance(command, JobCommand):
            return command
    raise KeyError(f"no job command {path!r}")


@dataclass(frozen=True)
class Option:
    """One field of a job as the command line spells it."""

    field: str
    info: FieldInfo
    cli: Cli
    names: tuple[str, ...]

    @property
    def flag(self) -> bool:
        return _flag(self.info)


def _flag(info: FieldInfo) -> bool:
    return info.annotation in (bool, bool | None)


def _cli(info: FieldInfo) -> Cli:
    return next((m for m in info.metadata if isinstance(m, Cli)), Cli())


def options(job: type[Job], command: JobCommand) -> list[Option]:
    """The command's options and arguments: the job's own fields in their order, then
    the store and profile every job has; fields the command fixes or omits are left out."""
    base = list(Job.model_fields)
    names = [n for n in job.model_fields if n not in base] + base
    found = []
    for name in names:
        if name in command.fixed or name in command.omit:
            continue
        info = job.model_fields[name]
        cli = _cli(info)
        spelled = cli.names or (f"--{name.replace('_', '-')}",)
        if _flag(info) and not cli.names:
            spelled = (f"{spelled[0]}/--no-{spelled[0][2:]}",)
        found.append(Option(name, info, cli, spelled))
    return found


def job_argv(job: Job, command: JobCommand) -> list[str]:
    """The arguments that give ``kzjobs <command>`` this job: the fields set explicitly
    (arguments first), so a job's own defaults stay its own."""
    arguments: list[str] = []
    opts: list[str] = []
    for opt in options(type(job), command):
        value = getattr(job, opt.field)
        if opt.field not in job.model_fields_set or value is None or value in ([], ()):
            continue
        if opt.cli.argument:
            arguments += map(str, value if isinstance(value, list | tuple) else [value])
        elif opt.flag:
            yes, _, no = opt.names[0].partition("/")
            opts.append(yes if value else no)
        elif isinstance(value, list | tuple):
            if opt.cli.sep:
                opts += [opt.names[0], opt.cli.sep.join(map(str, value))]
            else:
                opts += [a for v in value for a in (opt.names[0], str(v))]
        else:
            opts += [opt.names[0], str(value)]
    return arguments + opts


def argv(path: str, **fields: Any) -> list[str]:
    """The arguments of ``kzjobs <path>`` for a job with these fields (validated by the
    Job, so a plan cannot hold arguments its job would refuse)."""
    command = find(path)
    job = load(command.target)(**command.fixed, **fields)
    return job_argv(job, command)
