"""Crash and resume: real ``kzjobs`` processes SIGKILLed at seeded random points, again
and again, then re-run to the end.

Each test compares the killed-and-resumed outputs with an uninterrupted run of the same
job: byte for byte (recognition, level 2), or tensor for tensor (classifier and detector
weights). Every kill must land while the job is working, and each killed run must have
left progress behind, or the test proves nothing and fails.

While the recognition job is killed, a watcher thread lists its output prefix over and
over and reads every object it sees: each must already be whole, that is byte-equal to
the uninterrupted run's object of the same key.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kzjobs.core.store import LocalStore, S3Store, Store, open_store
from kzjobs.recognize.outputs import done_pages

SEED = 20190  # every kill plan (which moment, how long after it) is drawn from this
TIMEOUT = 240.0  # seconds for one job process, far above its real time


# ---- running and killing the CLI --------------------------------------------------------


def kzjobs(*args: str) -> list[str]:
    """The ``kzjobs`` command, as the local launcher runs it."""
    return [sys.executable, "-m", "kzjobs", *args]


def job_env() -> dict[str, str]:
    # One intra-op thread, as in the in-process reference runs: the number of threads
    # can change the order of float sums, and so the last bits of a result.
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_and_kill(argv: list[str], log: Path, *, when: Callable[[], bool], delay: float,
                 poll: float = 0.01) -> bool:
    """Run ``argv`` and SIGKILL it ``delay`` s after ``when()`` first holds.

    Returns True when the kill landed on a running job, False when it had already exited.
    """
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=job_env())
    try:
        deadline = time.monotonic() + TIMEOUT
        while not when():
            if proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise TimeoutError(f"{argv[3:5]}: the kill condition never held")
            time.sleep(poll)
        time.sleep(delay)
        if proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_to_end(argv: list[str], log: Path) -> dict[str, Any]:
    """Run ``argv`` to its end; its JSON summary."""
    with log.open("wb") as err:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, env=job_env(),
                              timeout=TIMEOUT, check=False)
    assert done.returncode == 0, log.read_text()[-3000:]
    return json.loads(done.stdout)


def rewritten(path: Path) -> Callable[[], bool]:
    """A test of whether ``path`` was written since now: an atomic write is a new inode."""

    def version() -> tuple[int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    first = version()
    return lambda: version() not in (None, first)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def appeared(store: Store, prefix: str) -> Callable[[], bool]:
    """A test of whether any object exists under ``prefix``."""
    return lambda: bool(store.list(prefix))


@contextlib.contextmanager
def logged(name: str) -> Iterator[list[logging.LogRecord]]:
    """The INFO records of logger ``name`` while the block runs."""
    handler = _Records()
    records = handler.records
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def write_profile(path: Path, data: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A KZ_HOME for module-scoped setup (the autouse one is per test)."""
    from kzjobs.core.settings import get_settings

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KZ_HOME", str(home))
        for var in ("KZ_STORE", "KZ_MLFLOW_URI"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        yield home
    get_settings.cache_clear()


# ---- recognition ------------------------------------------------------------------------

# Fast inference: a narrow detector at a small page scale; untrained weights still
# propose hundreds of boxes per page, so every page has real work and output.
RECOGNIZE_PROFILE = {
    "name": "crash-recognize",
    "detect": {"fpn_channels": 16, "box_head_size": 32, "page_size": 320,
               "score_threshold": 0.0, "threads": 1},
    "classify": {"page_size": 320, "hidden": 64, "tta_scales": [1.0], "top_k": 5,
                 "threads": 1},
}
PAGE_OUTPUTS = ("pages/{}.json", "transcripts/{}.txt", "review/{}.html")
COMMITTED = re.compile(r"kzjobs\.recognize\.job: recognized (\S+): \d+ characters")


@dataclass
class Recognition:
    root: str  # the store with the collection and the bundle
    profile: str
    pages: list[str]
    expected: dict[str, bytes]  # the uninterrupted run's outputs, by key under its prefix
    page_seconds: float  # the uninterrupted run's time per page

    def argv(self, out: str) -> list[str]:
        # One page a batch, so that kills land at every moment of a page's life (the
        # uninterrupted run used the default batch: the outputs must not differ). A killed
        # batched shard is tested in tests/dags/test_celery.py.
        return kzjobs("recognize", "--model", "model", "--collection", "coll", "--out", out,
                      "--store", self.root, "--profile", self.profile, "--batch", "1")


@pytest.fixture(scope="module")
def recognition(tmp_path_factory: pytest.TempPathFactory, isolated_home: Path) -> Recognition:
    """10 synthetic pages, a seeded untrained bundle, and an uninterrupted run's outputs."""
    from PIL import Image

    from bench.workload import write_seeded_bundle
    from kzjobs.core.device import torch_threads
    from kzjobs.recognize.job import RecognizeJob
    from kzjobs.synth import generate

    root = tmp_path_factory.mktemp("recognize")
    store = open_store(root / "store")
    generate(store.child("coll"), books=2, pages_per_book=5, seed=3, fonts=["ipaex-mincho"],
             labelled=False)
    for key in store.list("coll/images"):  # half-size scans: less to decode and to write
        image = Image.open(io.BytesIO(store.read_bytes(key)))
        buf = io.BytesIO()
        image.resize((image.width // 2, image.height // 2)).save(buf, format="JPEG", quality=90)
        store.write_bytes(key, buf.getvalue())
    profile_path = write_profile(root / "profile.yaml", RECOGNIZE_PROFILE)
    write_seeded_bundle(store, "model", profile=profile_path, propose_all=False)

    with torch_threads(1):
        summary = RecognizeJob(store_uri=store.uri, profile_name=profile_path, model="model",
                               collection="coll", out="reference", progress=False).run()
    pages = sorted(k.rsplit("/", 1)[1].removesuffix(".jpg") for k in store.list("coll/images"))
    assert summary["merge"]["recognized"] == len(pages) == 10
    reference = store.child("reference")
    expected = {k: reference.read_bytes(k) for k in reference.list()}
    return Recognition(store.uri, profile_path, pages, expected,
                       summary["seconds"] / len(pages))




def started_pages(out: Store) -> set[str]:
    return {k[len("transcripts/"):-len(".txt")] for k in out.list("transcripts")}


def check_object(key: str, data: bytes, expected: dict[str, bytes]) -> str | None:
    """What is wrong with one visible object: it must equal the uninterrupted run's;
    ``report.json`` names its own location, so it must parse and agree elsewhere."""
    if key == "report.json":
        drop = ("submission", "review", "report")
        got, want = json.loads(data), json.loads(expected[key])
        if {k: v for k, v in got.items() if k not in drop} != \
                {k: v for k, v in want.items() if k not in drop}:
            return f"{key}: differs from the uninterrupted run's"
    elif key not in expected:
        return f"{key}: not an output of the uninterrupted run"
    elif data != expected[key]:
        return f"{key}: {len(data)} bytes, not the expected {len(expected[key])}"
    return None


def check_whole(out: Store, expected: dict[str, bytes]) -> list[str]:
    """Problems with the objects visible under ``out`` (see :func:`check_object`)."""
    problems = []
    for key in out.list():
        try:
            problem = check_object(key, out.read_bytes(key), expected)
        except KeyError:
            problem = f"{key}: listed but not readable"
        if problem:
            problems.append(problem)
    return problems


def versions(out: Store) -> dict[str, tuple[Any, ...]]:
    """The visible keys, each with a tag that changes whenever its object is replaced."""
    if isinstance(out, S3Store):  # one LIST gives every ETag: no GET for unchanged objects
        pages = out.client.get_paginator("list_objects_v2").paginate(
            Bucket=out.bucket, Prefix=f"{out.prefix}/")
        cut = len(out.prefix) + 1
        return {o["Key"][cut:]: (o["ETag"], o["LastModified"])
                for page in pages for o in page.get("Contents", [])}
    tags = {}
    for key in out.list():
        path = out.local_path(key)
        assert path is not None
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            tags[key] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return tags


class Watcher(threading.Thread):
    """Lists a prefix again and again until stopped, and reads every version of every
    object it sees appear."""

    def __init__(self, out: Store, expected: dict[str, bytes], pause: float) -> None:
        super().__init__(daemon=True)
        self.out, self.expected, self.pause = out, expected, pause
        self.problems: list[str] = []
        self.sweeps = 0
        self.checked: set[tuple[str, tuple[Any, ...]]] = set()  # (key, version) read
        self._stop_event = threading.Event()

    def sweep(self) -> None:
        for key, tag in versions(self.out).items():
            if (key, tag) in self.checked:
                continue
            try:
                problem = check_object(key, self.out.read_bytes(key), self.expected)
            except KeyError:
                problem = f"{key}: listed but not readable"
            if problem:
                self.problems.append(problem)
            self.checked.add((key, tag))
        self.sweeps += 1

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sweep()
            self._stop_event.wait(self.pause)

    def stop(self) -> None:
        """Stop, and sweep once more: the final versions are read too."""
        self._stop_event.set()
        self.join(timeout=60)
        self.sweep()


def kill_plan(rng: random.Random, page_seconds: float) -> tuple[str, int, float]:
    """(moment, pages to commit first, delay): right after a page is committed, within a
    page's work, or between the writes of one page's outputs."""
    moment = rng.choice(["page committed", "within a page", "between a page's writes"])
    delay = rng.uniform(0.1, 0.9) * page_seconds if moment == "within a page" else 0.0
    return moment, rng.randint(1, 2), delay


def recognize_with_kills(rec: Recognition, out_uri: str, out: Store, logs: Path, *,
                         kills: int, seed: int) -> dict[str, Any]:
    """Kill ``kzjobs recognize`` ``kills`` times, run it to the end, and check everything."""
    rng = random.Random(seed)
    local = isinstance(out, LocalStore)
    watcher = Watcher(out, rec.expected, pause=0.05)
    watcher.start()
    done_before: list[set[str]] = []
    committed_files: dict[str, tuple[int, int]] = {}  # local: (inode, mtime) when first seen
    landed = []
    try:
        for k in range(kills):
            before = done_pages(out)
            # pages a kill caught in flight: their transcript is there, their JSON is not
            stale = started_pages(out) - before
            moment, n, delay = kill_plan(rng, rec.page_seconds)

            def when(before: set[str] = before, stale: set[str] = stale, moment: str = moment,
                     n: int = n) -> bool:
                new = done_pages(out) - before
                if moment != "between a page's writes" or not new:
                    return len(new) >= n
                # a page whose transcript is written and whose JSON (its 'done') is not yet;
                # after n + 1 pages without catching one, any moment will do
                return bool(started_pages(out) - before - stale - new) or len(new) > n

            done_before.append(before)
            killed = run_and_kill(rec.argv(out_uri), logs / f"run{k}.log", when=when,
                                  delay=delay, poll=0.01 if local else 0.03)
            after = done_pages(out)
            assert killed, f"kill {k} ({moment}) came after the job had finished"
            assert before < after < set(rec.pages), (k, moment, len(before), len(after))
            assert not out.exists("submission.csv")  # the merge never started
            assert check_whole(out, rec.expected) == []
            # (moment, pages done, whether a page was caught between its writes)
            landed.append((moment, len(after), bool(started_pages(out) - after)))
            if local:
                for page in after:
                    for pattern in PAGE_OUTPUTS:
                        st = out.local_path(pattern.format(page)).stat()
                        committed_files.setdefault(pattern.format(page),
                                                   (st.st_ino, st.st_mtime_ns))
        done_before.append(done_pages(out))
        summary = run_to_end(rec.argv(out_uri), logs / "final.log")
    finally:
        watcher.stop()

    # No half-written or stray object was ever visible, over many sweeps.
    assert watcher.problems == []
    assert watcher.sweeps >= 10 and {k for k, _ in watcher.checked} == set(rec.expected)
    # The outputs are the uninterrupted run's, and every page is in them exactly once.
    assert check_whole(out, rec.expected) == []
    assert sorted(out.list()) == sorted(rec.expected)
    rows = out.read_text("submission.csv").splitlines()[1:]
    assert Counter(r.split(",")[0] for r in rows) == Counter(rec.pages)
    # The last run did only what was missing.
    assert summary["already_done"] == len(done_before[-1])
    assert summary["recognized"] == len(rec.pages) - len(done_before[-1])
    assert summary["merge"]["recognized"] == len(rec.pages)
    assert summary["merge"]["submission"] == f"{out.uri}/submission.csv"

    # No committed page was recognized again: each run's log names the pages it
    # committed, and none of them was done before that run started.
    runs = [f"run{k}" for k in range(kills)] + ["final"]
    committed = [COMMITTED.findall((logs / f"{r}.log").read_text()) for r in runs]
    for run, pages, before in zip(runs, committed, done_before, strict=True):
        assert not set(pages) & before, f"{run} redid committed pages"
    counts = Counter(p for pages in committed for p in pages)
    assert max(counts.values()) == 1, counts
    # a page is unlogged only when a kill fell between its commit and its log line
    assert len(set(rec.pages) - set(counts)) <= kills
    assert set(committed[-1]) == set(rec.pages) - done_before[-1]
    if local:  # and no committed file was ever rewritten
        for key, stat in committed_files.items():
            st = out.local_path(key).stat()
            assert (st.st_ino, st.st_mtime_ns) == stat, f"{key} was rewritten"
    return {"landed": landed, "sweeps": watcher.sweeps, "versions": len(watcher.checked)}


def test_recognize_killed_again_and_again_ends_as_if_never_killed(
    recognition: Recognition, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    logs = tmp_path / "logs"
    logs.mkdir()
    result = recognize_with_kills(recognition, str(out_dir), LocalStore(out_dir), logs,
                                  kills=3, seed=SEED)
    # A kill mid-write leaves its temporary file behind, hidden from list() by its name.
    orphans = [p.name for p in out_dir.rglob(".*.tmp")]
    print(f"recognize, local store: {result}, orphaned temporary files: {orphans}")


def test_recognize_killed_while_writing_to_s3_ends_as_if_never_killed(
    recognition: Recognition, s3_env: str, tmp_path: Path
) -> None:
    out_uri = f"{s3_env}/out"
    logs = tmp_path / "logs"
    logs.mkdir()
    result = recognize_with_kills(recognition, out_uri, open_store(out_uri), logs,
                                  kills=2, seed=SEED + 1)
    print(f"recognize, S3: {result}")


# ---- training ---------------------------------------------------------------------------

# Small and quick, yet several epochs long, so that kills can fall between and within them.
CLASSIFY_PROFILE = {
    "name": "crash-classify",
    "classify": {"kinds": ["resnet18"], "page_size": 320, "crop": [128, 96],
                 "crops_per_page": 4, "max_boxes": 64, "box_bucket": 16, "hidden": 64,
                 "epochs": 5, "batch_size": 2, "lr": 0.01, "tta_scales": [1.0], "top_k": 5,
                 "threads": 1, "checkpoint_seconds": 1e-6},  # every step
}
DETECT_PROFILE = {
    "name": "crash-detect",
    "detect": {"fpn_channels": 16, "box_head_size": 32, "roi_batch_size": 32, "page_size": 192,
               "crop": [96, 96], "crops_per_page": 4, "batch_size": 2, "epochs": 3,
               "warmup_iters": 2, "threads": 1, "checkpoint_seconds": 1e-6},  # every step
}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, isolated_home: Path) -> Store:
    """A store with ``ds`` (two books of two pages) and ``ds/folds.json`` (book A holds
    out fold 0); each test writes under a prefix of its own."""
    from kzjobs.method.folds import FoldsJob
    from kzjobs.synth import generate

    store = open_store(tmp_path_factory.mktemp("train") / "store")
    generate(store.child("ds"), books=2, pages_per_book=2, seed=5, fonts=["ipaex-mincho"])
    FoldsJob(store_uri=store.uri, profile_name="tiny", dataset="ds", out="ds/folds.json").run()
    return store


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory for the test and its job processes: a job must write
    only where it is told (MLflow's default artifact root is ./mlruns)."""
    path = tmp_path / "cwd"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    import torch

    assert a.keys() == b.keys()
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=0, msg=name)  # bitwise


@pytest.mark.slow  # trains models
def test_classifier_training_killed_again_and_again_ends_with_the_same_model(
    labelled: Store, tmp_path: Path, workdir: Path
) -> None:
    from kzjobs.classify.jobs import ClassifyTrainJob
    from kzjobs.core.checkpoint import load_from_store

    store = labelled
    profile = write_profile(tmp_path / "classify.yaml", CLASSIFY_PROFILE)
    epochs = CLASSIFY_PROFILE["classify"]["epochs"]
    fields = {"dataset": "ds", "folds": "ds/folds.json", "boxes": "ds/train.csv",
              "kind": "resnet18", "fold": 0}
    reference = ClassifyTrainJob(store_uri=store.uri, profile_name=profile, out="cls/reference",
                                 progress=False, **fields).run()
    epoch_seconds = reference["train_seconds"] / epochs
    out = "cls/killed"
    argv = kzjobs("classify", "train", "--dataset", "ds", "--folds", "ds/folds.json",
                  "--boxes", "ds/train.csv", "--kind", "resnet18", "--fold", "0",
                  "--out", out, "--store", store.uri, "--profile", profile, "--no-progress")
    ckpt_path = store.local_path(f"{out}/checkpoint.pt")
    assert ckpt_path is not None

    rng = random.Random(SEED + 2)
    done, run_ids, landed = (0, 0), set(), []  # (epochs done, items of the next one)
    # First as the first checkpoint lands, after the first of the epoch's 4 steps, so that
    # a kill falls within an epoch; then at random; then during the OOF prediction, so
    # that training never ends before the last kill.
    for k in range(3):
        if k < 2:
            when = rewritten(ckpt_path)
            delay = 0.0 if k == 0 else rng.uniform(0.1, 0.7) * epoch_seconds
        else:
            when, delay = appeared(store, f"{out}/oof.parquet.parts"), 0.0
        assert run_and_kill(argv, tmp_path / f"run{k}.log", when=when, delay=delay), \
            f"kill {k} came after the job had finished"
        ckpt = load_from_store(store, f"{out}/checkpoint.pt")
        at = (ckpt["epoch"], ckpt["within"]["running"]["consumed"] if ckpt["within"] else 0)
        assert at > done, "a killed run left no new step"
        assert not store.exists(f"{out}/model.pt")
        done = at
        run_ids.add(ckpt["mlflow_run_id"])
        landed.append(at)
    assert done == (epochs, 0)  # the last kill fell after training, in the prediction
    assert any(items for _, items in landed), landed  # kills within an epoch: the point

    resumed = run_to_end(argv, tmp_path / "final.log")
    print(f"classify: killed at (epochs done, items) {landed}; epoch {epoch_seconds:.2f} s")
    assert_same_weights(load_from_store(store, "cls/reference/model.pt")["model"],
                        load_from_store(store, f"{out}/model.pt")["model"])
    assert store.read_bytes(f"{out}/oof.parquet") == \
        store.read_bytes("cls/reference/oof.parquet")
    assert resumed["history"] == reference["history"]  # every epoch's loss, to the bit
    assert resumed["valid"] == reference["valid"]
    assert run_ids == {resumed["mlflow_run_id"]}  # one MLflow run across every kill
    assert not store.exists(f"{out}/checkpoint.pt")
    assert not store.list(f"{out}/oof.parquet.parts")
    assert list(workdir.iterdir()) == []  # MLflow's artifacts went to KZ_HOME, not ./mlruns


@pytest.mark.slow  # trains models
def test_detector_training_killed_again_and_again_ends_with_the_same_model(
    labelled: Store, tmp_path: Path, workdir: Path
) -> None:
    from kzjobs.core.checkpoint import load_from_store
    from kzjobs.detect.jobs import DetectTrainJob

    store = labelled
    profile = write_profile(tmp_path / "detect.yaml", DETECT_PROFILE)
    epochs = DETECT_PROFILE["detect"]["epochs"]
    reference = DetectTrainJob(store_uri=store.uri, profile_name=profile, dataset="ds",
                               folds="ds/folds.json", fold=0, out="det/reference",
                               progress=False).run()
    epoch_seconds = reference["train_seconds"] / epochs
    out = "det/killed"
    argv = kzjobs("detect", "train", "--dataset", "ds", "--folds", "ds/folds.json",
                  "--fold", "0", "--out", out, "--store", store.uri, "--profile", profile,
                  "--no-progress")
    ckpt_path = store.local_path(f"{out}/checkpoint.pt")
    assert ckpt_path is not None

    rng = random.Random(SEED + 3)
    done, landed = (0, 0), []  # (epochs, steps of the next one) in the checkpoint
    for k in range(3):
        # The first kill falls as the first checkpoint lands, after the first of the epoch's
        # 4 steps, so at least one kill is within an epoch; the others fall at random.
        delay = 0.0 if k == 0 else rng.uniform(0.1, 0.7) * epoch_seconds
        assert run_and_kill(argv, tmp_path / f"run{k}.log", when=rewritten(ckpt_path),
                            delay=delay), f"kill {k} came after the job had finished"
        ckpt = load_from_store(store, f"{out}/checkpoint.pt")
        at = (ckpt["epoch"], ckpt["within"]["running"]["steps"] if ckpt["within"] else 0)
        assert at > done, "a killed run left no new step"
        assert not store.exists(f"{out}/model.pt")
        done = at
        landed.append(at)
    assert any(steps for _, steps in landed), landed  # kills within an epoch: the point

    resumed = run_to_end(argv, tmp_path / "final.log")
    print(f"detect: killed at (epoch, step) {landed}; epoch {epoch_seconds:.2f} s")
    assert resumed["resumed_from_epoch"] == done[0]
    assert_same_weights(load_from_store(store, "det/reference/model.pt")["model"],
                        load_from_store(store, f"{out}/model.pt")["model"])
    assert resumed["loss"] == reference["loss"]  # the last epoch's, to the bit
    assert resumed["valid"] == reference["valid"]
    assert list(workdir.iterdir()) == []


def write_level2_run(store: Store, run: str, seed: int) -> None:
    """Simulated OOF predictions of two classifier kinds over six folds, with truth."""
    from kzjobs.data.format import write_annotations
    from kzjobs.level2.simulate import KindSpec, simulate

    sim = simulate(kinds=(KindSpec("a", good=(0.0, 0.5), acc_good=0.9, acc_bad=0.4),
                          KindSpec("b", good=(0.5, 1.0), acc_good=0.9, acc_bad=0.4, scale=1.4)),
                   books=6, pages_per_book=1, n_classes=40, n_folds=6, seed=seed)
    for frame in sim.oof():
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        store.write_bytes(f"{run}/classify/{frame['kind'].iloc[0]}/fold{frame['fold'].iloc[0]}/"
                          "oof.parquet", buf.getvalue())
    for fold in sorted(set(sim.folds.values())):
        pages = {i: b for i, b in sim.boxes.items() if sim.folds[i.split("_")[0]] == fold}
        store.write_bytes(f"{run}/detect/fold{fold}/oof.csv", write_annotations(pages))
    store.write_bytes("ds/train.csv", write_annotations(sim.truth))


@pytest.mark.slow  # trains models
def test_level2_training_killed_again_and_again_ends_with_the_same_boosters(
    tmp_path: Path
) -> None:
    from kzjobs.level2.jobs import Level2TrainJob

    store = open_store(tmp_path / "store")
    write_level2_run(store, "run", seed=4)
    profile = write_profile(tmp_path / "level2.yaml", {
        "name": "crash-level2", "level2": {"lgb_rounds": 120, "xgb_rounds": 120, "threads": 1}})
    with logged("kzjobs.level2.train") as records:
        reference = Level2TrainJob(store_uri=store.uri, profile_name=profile, run_prefix="run",
                                   out="l2/reference", dataset="ds").run()
    assert reference["folds"] == list(range(6))
    # a fold's fitting time, from the job's own "fitting fold" lines
    starts = [r.created for r in records if "fitting fold" in r.getMessage()]
    fold_seconds = min(b - a for a, b in itertools.pairwise(starts))
    out = "l2/killed"
    argv = kzjobs("level2", "train", "--run", "run", "--out", out, "--dataset", "ds",
                  "--store", store.uri, "--profile", profile)

    def folds_done() -> int:
        return sum(store.exists(f"{out}/fold{f}/xgb.ubj") for f in range(6))

    rng = random.Random(SEED + 4)
    done, landed = 0, []
    for k in range(3):
        assert run_and_kill(argv, tmp_path / f"run{k}.log",
                            when=lambda before=done: folds_done() > before,
                            delay=rng.uniform(0.1, 0.6) * fold_seconds), \
            f"kill {k} came after the job had finished"
        assert folds_done() > done, "a killed run left no new fold"
        assert not store.exists(f"{out}/report.json")
        done = folds_done()
        landed.append(done)

    resumed = run_to_end(argv, tmp_path / "final.log")
    print(f"level2: killed with {landed} folds done; {fold_seconds:.2f} s a fold")
    assert resumed["resumed_folds"] == list(range(done))
    assert {k: v for k, v in resumed.items() if k not in ("resumed_folds", "model")} == \
        {k: v for k, v in reference.items() if k not in ("resumed_folds", "model")}
    names = sorted(k.removeprefix("l2/reference/") for k in store.list("l2/reference"))
    assert sorted(k.removeprefix(f"{out}/") for k in store.list(out)) == names
    for name in names:  # native booster files, vocabulary, meta, OOF winners, report
        if name != "report.json":
            assert store.read_bytes(f"{out}/{name}") == \
                store.read_bytes(f"l2/reference/{name}"), name
