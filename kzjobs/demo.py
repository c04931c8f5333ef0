"""``kzjobs demo``: the whole system on this machine, through Airflow, on the embedded default.

Synthetic books go into the store (``var/store``): a training set, held-out books and
an unlabelled incoming collection. Then the three DAGs run with ``dag.test()`` on a
SQLite metadata DB under ``var/airflow`` and the local launcher: ``kz_retrain``
(which registers a candidate in MLflow on SQLite), ``kz_promote`` (which makes it the
champion when it is better) and ``kz_recognize`` (which reads the incoming collection
with the champion). The synthetic data is made once; each ``make demo`` is a new
retraining run, which the promotion then judges against the champion.

Airflow reads its configuration once per process, so each DAG runs in a subprocess
(``python -m kzjobs.demo DAG_ID CONF``), which is also what the DAG tests use.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

MARKER = "@@KZ-DAGRUN@@"
DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"  # the DAGs of this checkout


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an embedded Airflow under ``home`` (SQLite, no examples)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    return env | extra


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the metadata DB (idempotent)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stderr[-4000:]}")


def dag_test(dag_id: str, conf: dict[str, Any], tasks: list[str] | None = None
             ) -> dict[str, Any]:
    """Run one DAG with ``dag.test()`` in this process; its task states and XComs.
    ``tasks``: only these task ids and their upstream tasks (a part of the DAG)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=None)
    if bag.import_errors:
        return {"state": "import_error",
                "import_errors": {k: str(v) for k, v in bag.import_errors.items()}}
    dag = bag.get_dag(dag_id)
    if tasks:
        dag = dag.partial_subset(task_ids=tasks, include_upstream=True)
    run = dag.test(run_conf=conf)

    def name(task_id: str, map_index: int) -> str:
        return f"{task_id}[{map_index}]" if map_index >= 0 else task_id

    with create_session() as session:
        instances = run.get_task_instances(session=session)
        tasks = {name(ti.task_id, ti.map_index): str(ti.state) for ti in instances}
        # A skipped task (pretrain with fresh weights) ran nothing: it has no time.
        seconds = {name(ti.task_id, ti.map_index): round(ti.duration or 0.0, 1)
                   for ti in instances if ti.state != "skipped"}
        rows = session.query(XComModel).filter(
            XComModel.run_id == run.run_id, XComModel.dag_id == dag_id,
            XComModel.key == "return_value",
        )
        xcom = {name(r.task_id, r.map_index): XComModel.deserialize_value(r) for r in rows}
    return {"state": str(run.state), "run_id": run.run_id, "tasks": tasks,
            "seconds": seconds, "xcom": xcom}


def run_dag(dag_id: str, conf: dict[str, Any], env: dict[str, str], *,
            timeout: float | None = None, log_file: Path | None = None,
            watch: Callable[[str], None] | None = None, tasks: list[str] | None = None
            ) -> dict[str, Any]:
    """:func:`dag_test` in a fresh process with ``env``; its whole log to ``log_file``.

    The log is streamed, line by line, to ``log_file`` and to ``watch`` (the demo's
    progress line), so a run of many minutes shows where it is while it runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kzjobs.demo", dag_id, json.dumps(conf),
         *([json.dumps(tasks)] if tasks else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, bufsize=1,
    )
    timer = threading.Timer(timeout, proc.kill) if timeout else None
    if timer:
        timer.start()
    tail: deque[str] = deque(maxlen=200)
    result = None
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file or os.devnull, "w") as log:
        assert proc.stdout is not None
        for line in proc.stdout:  # text mode: tqdm's carriage returns end lines too
            log.write(line)
            line = line.rstrip("\n")
            if line.startswith(MARKER):
                result = json.loads(line.removeprefix(MARKER))
                continue
            tail.append(line)
            if watch:
                watch(line)
    returncode = proc.wait()
    if timer:
        timer.cancel()
        if returncode < 0 and not timer.is_alive() and result is None:
            raise TimeoutError(f"DAG {dag_id} did not finish within {timeout:.0f} s")
    if result is None:
        raise RuntimeError(f"DAG {dag_id} did not report (exit {returncode}):\n"
                           + "\n".join(tail))
    return result


class Watch:
    """The demo's progress: the DAG task that runs, its job's latest line, the time so far.

    On a terminal it is one live line (rich); elsewhere (CI, a log file) a line when a
    task ends, and one every ``heartbeat`` seconds while a task runs."""

    def __init__(self, say: Callable[[str], None], *, live: bool | None = None,
                 heartbeat: float = 30.0) -> None:
        self.say = say
        self.live = sys.stderr.isatty() if live is None else live
        self.heartbeat = heartbeat
        self.started = self.task_started = self.last_said = time.monotonic()
        self.dag = self.task = self.detail = ""
        self.done: list[tuple[str, float]] = []  # (dag > task, seconds), in order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._status: Any = None
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Watch:
        if self.live:
            from rich.console import Console

            self._status = Console(stderr=True).status("", spinner="dots")
            self._status.start()
        # Jobs can be silent for minutes (a detector epoch): the clock runs on its own.
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join()
        if self._status:
            self._status.stop()

    def dag_run(self, dag_id: str) -> Callable[[str], None]:
        """The ``watch`` for :func:`run_dag` of ``dag_id``."""
        with self._lock:
            self.dag, self.task, self.detail = dag_id, "", ""
        return self.line

    def line(self, line: str) -> None:
        now = time.monotonic()
        with self._lock:
            if m := _TASK_START.search(line):
                self.task, self.task_started, self.detail = _task_name(m), now, ""
                self.last_said = now
            elif m := _TASK_END.search(line):
                name = f"{self.dag} > {_task_name(m)}"
                self.done.append((name, now - self.task_started))
                self.say(f"  [{_clock(now - self.started)}] {name} done in "
                         f"{_clock(now - self.task_started)}")
                self.task, self.detail = "", ""
            elif self.task and (m := _JOB_LINE.match(line)):
                self.detail = _JOB_LOG_PREFIX.sub("", m.group(1)).strip() or self.detail
        self._show(now)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._show(time.monotonic())

    def _show(self, now: float) -> None:
        with self._lock:
            where = f"{self.dag} > {self.task}" if self.task else self.dag
            if self._status:
                from rich.markup import escape  # a job's line may hold [brackets]

                self._status.update(
                    f"[bold]{escape(where)}[/] {_clock(now - self.task_started)} "
                    f"(total {_clock(now - self.started)})  [dim]{escape(self.detail[:80])}[/]")
            elif self.task and now - self.last_said >= self.heartbeat:
                detail = f": {self.detail[:100]}" if self.detail else ""
                self.say(f"  [{_clock(now - self.started)}] {where} running for "
                         f"{_clock(now - self.task_started)}{detail}")
                self.last_said = now


# dag.test() logs these around every task instance (airflow.sdk.definitions.dag).
_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
# A job's own line, as the local operator repeats it in the task log ...
_JOB_LINE = re.compile(r"^\S+ \[\w+\s*\] (.*?)\s+\[[\w.]*KzLocalJobOperator\]")
# ... and the job's logging prefix within it (kzjobs.cli: time, level, logger).
_JOB_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ \w+ [\w.]+: ")


def _task_name(match: re.Match[str]) -> str:
    task_id, index = match.group(1), int(match.group(2))
    return f"{task_id}[{index}]" if index >= 0 else task_id


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _check(result: dict[str, Any], dag_id: str, logs: Path) -> dict[str, Any]:
    if result["state"] != "success":
        failed = sorted(t for t, s in result.get("tasks", {}).items() if s == "failed")
        raise RuntimeError(f"{dag_id} ended {result['state']}; failed tasks: {failed} "
                           f"{result.get('import_errors', '')}; see {logs / dag_id}.log")
    return result


def demo(*, profile: str = "demo", books: int = 6, pages_per_book: int = 4,
         heldout_books: int = 2, incoming_books: int = 2, heldout_pages_per_book: int = 4,
         shards: int = 2,
         fonts: list[str] | None = None, vocabulary_size: int | None = 200,
         heldout_fonts: Literal["test", "dev"] = "test", log: Any = None) -> dict[str, Any]:
    """Retrain, promote and recognize through Airflow; a summary of what happened.

    The held-out and incoming books are in the ``heldout_fonts`` set: ``test`` for the
    figure a user reads, ``dev`` to choose the demo's settings on."""
    from kzjobs.core.settings import get_settings
    from kzjobs.core.store import open_store
    from kzjobs.synth import generate
    from kzjobs.synth.fonts import split

    if heldout_fonts not in ("test", "dev"):
        raise ValueError(f"held-out fonts are test or dev, not {heldout_fonts!r}")
    # Training books in the training fonts (``fonts``: some of them); the held-out and
    # incoming books are in fonts never seen in training.
    unseen = list(split(heldout_fonts))
    # The held-out and incoming books keep their size when the training set changes.
    sets = {  # key: (books, pages a book, seed, labelled, fonts)
        "datasets/train": (books, pages_per_book, 1, True, fonts or list(split("train"))),
        "datasets/heldout": (heldout_books, heldout_pages_per_book, 2, True, unseen),
        "incoming/batch-1": (incoming_books, heldout_pages_per_book, 3, False, unseen),
    }
    if seen := set(sets["datasets/train"][-1]) & set(unseen):
        raise ValueError(f"the demo's training fonts must not be {heldout_fonts} fonts: "
                         f"{sorted(seen)}")
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    settings = get_settings()
    home = settings.home.resolve()
    store_uri = settings.store_uri
    store = open_store(store_uri)
    env = airflow_env(home / "airflow", KZ_HOME=str(home), KZ_STORE=store_uri,
                      KZ_LAUNCHER="local", KZ_PROFILE=profile)
    say(f"Airflow metadata DB under {home / 'airflow'}")
    migrate(env)

    for key, (n, pages, seed, labelled, font_ids) in sets.items():
        marker = "train.csv" if labelled else "books.json"
        if not store.exists(f"{key}/{marker}"):
            say(f"synthetic books -> {store_uri}/{key}")
            generate(store.child(key), books=n, pages_per_book=pages, seed=seed,
                     labelled=labelled, fonts=font_ids, vocabulary_size=vocabulary_size)

    logs = home / "airflow" / "demo-logs"
    with Watch(say) as watch:
        say("kz_retrain: validate, folds, detector, classifiers, pseudolabels, level 2, "
            "evaluate, register (minutes)")
        retrain = _check(run_dag("kz_retrain", {
            "profile": profile, "dataset": "datasets/train", "heldout": "datasets/heldout",
            "incoming": ["incoming/batch-1"],
        }, env, log_file=logs / "kz_retrain.log", watch=watch.dag_run("kz_retrain")),
            "kz_retrain", logs)
        say("kz_promote: candidate against champion on the same held-out books")
        promote = _check(run_dag("kz_promote", {"profile": profile}, env,
                                 log_file=logs / "kz_promote.log",
                                 watch=watch.dag_run("kz_promote")), "kz_promote", logs)
        say("kz_recognize: the incoming collection, in shards, with the champion")
        recognize = _check(run_dag("kz_recognize", {
            "collection": "incoming/batch-1", "profile": profile, "shards": shards,
        }, env, log_file=logs / "kz_recognize.log", watch=watch.dag_run("kz_recognize")),
            "kz_recognize", logs)

    evaluation = retrain["xcom"].get("evaluate") or {}
    decision = promote["xcom"].get("promote") or {}
    merged = recognize["xcom"].get("merge") or {}
    dag_results = (("kz_retrain", retrain), ("kz_promote", promote), ("kz_recognize", recognize))
    return {
        "profile": profile,
        "train_pages": books * pages_per_book,
        "heldout_fonts": heldout_fonts,
        "heldout_f1": evaluation.get("f1"),
        "heldout_f1_by_book": {b: v["f1"] for b, v in evaluation.get("by_book", {}).items()},
        "heldout_detection_f1": evaluation.get("detection_f1"),
        "registered": retrain["xcom"].get("register"),
        "promotion": {k: decision.get(k) for k in ("decision", "reason", "champion_after")},
        "recognized": {k: merged.get(k) for k in ("recognized", "quarantined", "characters")},
        "submission": f"{store_uri}/{merged['submission']}" if merged.get("submission") else None,
        "review": merged.get("review"),
        "mlflow": settings.tracking_uri,
        "airflow_home": str(home / "airflow"),
        "logs": str(logs),
        "stages": {dag_id: result.get("seconds", {}) for dag_id, result in dag_results},
        "skipped": {dag_id: sorted(t for t, state in result.get("tasks", {}).items()
                                   if state == "skipped") for dag_id, result in dag_results},
    }


def report(summary: dict[str, Any], seconds: float) -> str:
    """What the demo did, for a person: stages, held-out F1, where the outputs are."""
    lines = [f"kzjobs demo finished in {seconds / 60:.1f} min", ""]
    for dag_id, stages in summary["stages"].items():
        lines.append(f"{dag_id}: {sum(stages.values()):.0f} s of task time")
        lines += [f"  {task:<28} {secs:7.1f} s" for task, secs in stages.items()]
        lines += [f"  {task:<28} skipped" for task in summary.get("skipped", {}).get(dag_id, [])]
    f1 = summary["heldout_f1"]
    fonts = summary.get("heldout_fonts", "test")
    lines += ["", f"held-out F1 (competition metric, {fonts} fonts): {f1:.3f}" if f1 is not None
              else "held-out F1: not computed"]
    lines += [f"  {book:<10} {value:.3f}" for book, value in
              sorted(summary["heldout_f1_by_book"].items())]
    if (detection := summary.get("heldout_detection_f1")) is not None:
        lines.append(f"  detection only (boxes, any code): {detection:.3f}")
    # The demo trains for minutes: say so beside its F1, and where a real run's figures are.
    lines.append(f"  (profile {summary['profile']}, {summary['train_pages']} training pages; "
                 "the bench profile's figures: README, 'Where it stands')")
    registered = summary.get("registered") or {}
    promotion = summary["promotion"]
    lines += [
        f"registered: {registered.get('name', '?')} version {registered.get('version', '?')}",
        f"promotion:  {promotion.get('decision')} ({promotion.get('reason')}); "
        f"champion is version {promotion.get('champion_after')}",
        "recognized: {recognized} pages, {quarantined} quarantined, {characters} characters"
        .format(**summary["recognized"]),
        "",
        f"predictions: {summary['submission']}",
        f"review page: {summary['review']}",
        f"DAG logs:    {summary['logs']}",
        f"MLflow UI:   {sys.executable.rsplit('/', 1)[0]}/mlflow ui "
        f"--backend-store-uri {summary['mlflow']}   (then open http://127.0.0.1:5000)",
    ]
    return "\n".join(lines)



def command(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile of the run.")] = "demo",
    books: Annotated[int, typer.Option(help="Training books.")] = 6,
    pages_per_book: Annotated[int, typer.Option(help="Pages per training book.")] = 4,
    shards: Annotated[int, typer.Option(help="Recognition shards.")] = 2,
    # Minutes of CPU teach 200 classes something; the full 3,119 need far more pages.
    vocabulary_size: Annotated[int | None, typer.Option(
        help="Most frequent code points the books use (0: all 3,119).")] = 200,
    heldout_fonts: Annotated[str, typer.Option(
        help="Fonts of the held-out and incoming books: test, or dev to choose settings on "
        "(a fresh KZ_HOME: the books are made once).")] = "test",
) -> None:
    """Retrain -> promote -> recognize through Airflow on this machine (var/)."""
    import time

    from kzjobs.core.settings import get_settings

    start = time.monotonic()
    summary = demo(profile=profile, books=books, pages_per_book=pages_per_book, shards=shards,
                   vocabulary_size=vocabulary_size or None,
                   heldout_fonts=heldout_fonts)  # type: ignore[arg-type]
    path = get_settings().home / "demo-summary.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    typer.echo(report(summary, time.monotonic() - start))
    typer.echo(f"summary (JSON): {path}")


if __name__ == "__main__":  # python -m kzjobs.demo DAG_ID CONF [TASKS]: one DAG run, for run_dag
    result = dag_test(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {},
                      json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
    print(MARKER + json.dumps(result, default=str), flush=True)
