"""Promotion: move the ``champion`` alias to the candidate only when it is better.

Both versions are judged on the same held-out books: the candidate's held-out set,
identified by its content digest (:func:`kzjobs.release.registry.dataset_version`). A version's
F1 on a held-out set is cached in its tag ``eval.<digest>.f1``; a missing one is
computed by :func:`kzjobs.release.evaluate.evaluate_model`. A tie keeps the champion. A
candidate that cannot be evaluated is rejected. The decision, its reason and its
figures are recorded as ``promotion.*`` tags on the candidate version.

Two promotions never interleave: the DAG runs one at a time (``max_active_runs=1``)
and the job holds a lock across read-compare-move. The lock must hold across workers
on different machines, so it is a PostgreSQL advisory lock (on ``KZ_LOCK_URI``, or the
MLflow database itself): it is released by the server when the holder's connection
dies, so a crashed promotion never leaves a stale lock, which a lock object in S3
would (S3 has no leases). The embedded default (MLflow on SQLite) is one machine by
nature, so there a file lock next to the database does the same job.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from kzjobs.core.job import Job
from kzjobs.core.settings import get_settings
from kzjobs.core.store import join
from kzjobs.data.dataset import Dataset
from kzjobs.release.registry import (
    CANDIDATE,
    CHAMPION,
    client,
    dataset_version,
    eval_tag,
    get_version,
    load_model,
    model_name,
    version_ref,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

# (version, held-out dataset, its digest) -> evaluation summary
Evaluator = Callable[["ModelVersion", str, str], dict[str, Any]]


class LockTimeout(TimeoutError):
    """Another promotion held the lock for longer than the timeout."""


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key derived from a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def _postgres_lock(uri: str, name: str, timeout: float, poll: float) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(uri, poolclass=NullPool)
    key = _lock_key(name)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + timeout
            # A session-level lock: it lives as long as this connection does.
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.rollback()  # no transaction held open while waiting
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"promotion lock {name!r} still held after {timeout}s")
                time.sleep(poll)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def promotion_lock(name: str, *, timeout: float = 600.0, poll: float = 1.0) -> Iterator[str]:
    """Hold the promotion lock of model ``name``; yields the kind of lock held."""
    settings = get_settings()
    uri = settings.lock_uri or settings.tracking_uri
    lock_name = f"kz-promote:{name}"
    if uri.startswith(("postgresql:", "postgresql+", "postgres:")):
        with _postgres_lock(uri, lock_name, timeout, poll):
            yield "postgresql"
    elif uri.startswith("sqlite:///"):
        from filelock import FileLock
        from filelock import Timeout as FileLockTimeout

        path = Path(uri[len("sqlite:///") :]).with_name(f".{name}.promote.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(path, timeout=timeout):
                yield "file"
        except FileLockTimeout:
            raise LockTimeout(f"promotion lock {path} still held after {timeout}s") from None
    else:
        raise RuntimeError(
            f"no lock that holds across workers for tracking URI {uri!r}: "
            "set KZ_LOCK_URI to a PostgreSQL URI (e.g. the MLflow database)"
        )


def _finite_f1(f1: float) -> float:
    # NaN compares false both ways: it would pass as a first version, and as a champion
    # it could never be beaten. A score that is not a number is a failed evaluation.
    if not math.isfinite(f1):
        raise ValueError(f"F1 {f1!r} is not a finite number")
    return f1


class PromoteJob(Job):
    """Compare a candidate with the champion on the same held-out books; maybe promote."""

    version: str = Field(CANDIDATE, description="Version number or alias to promote.")
    heldout: str | None = Field(
        None, description="Held-out dataset; default: the version's 'heldout' tag.")
    lock_timeout: float = Field(600.0, description="Seconds to wait for the lock.")

    def run(self) -> dict[str, Any]:
        def evaluate(version: ModelVersion, heldout: str, hv: str) -> dict[str, Any]:
            from kzjobs.release.evaluate import evaluate_model

            # Recognition outputs are kept (and resumed) per version and held-out set.
            out = join("evaluations", version.name, f"v{version.version}", hv)
            return evaluate_model(version_ref(version.version, version.name), heldout,
                                  self.store, out=out, profile=self.profile_name)

        name = model_name()
        c = client()
        with promotion_lock(name, timeout=self.lock_timeout) as lock:
            cand = get_version(self.version, c)
            if cand is None:
                raise LookupError(f"no version {self.version!r} of {name} to promote")
            champ = get_version(CHAMPION, c)
            heldout = self.heldout or cand.tags.get("heldout")
            if not heldout:
                raise ValueError(f"version {cand.version} has no 'heldout' tag; pass --heldout")
            hv = dataset_version(Dataset.open(heldout, self.store))
            figures: dict[str, Any] = {
                "candidate": int(cand.version),
                "champion": int(champ.version) if champ else None,
                "heldout": heldout,
                "heldout_version": hv,
                "lock": lock,
            }

            if champ is not None and str(champ.version) == str(cand.version):
                decision, reason = "kept", "the candidate is already the champion"
                figures["candidate_f1"] = figures["champion_f1"] = None
            else:
                failure = self._unloadable(cand)
                cand_f1 = None
                if not failure:
                    cand_f1, failure = self._f1(cand, heldout, hv, evaluate, tolerate=True)
                figures["candidate_f1"] = cand_f1
                if failure:
                    decision, reason = "rejected", f"candidate failed: {failure}"
                elif champ is None:
                    decision, reason = "promoted", "first version: no champion yet"
                else:
                    champ_f1, _ = self._f1(champ, heldout, hv, evaluate, tolerate=False)
                    figures["champion_f1"] = champ_f1
                    if cand_f1 > champ_f1:
                        decision = "promoted"
                        reason = f"F1 {cand_f1:.4f} beats the champion's {champ_f1:.4f}"
                    elif cand_f1 == champ_f1:
                        decision, reason = "rejected", f"tie at F1 {cand_f1:.4f}: champion kept"
                    else:
                        decision = "rejected"
                        reason = f"F1 {cand_f1:.4f} below the champion's {champ_f1:.4f}"
                figures.setdefault("champion_f1", None)

            if decision == "promoted":
                c.set_registered_model_alias(name, CHAMPION, cand.version)
            self._record(c, cand, decision, reason, figures)
        log.info("promotion of %s v%s: %s (%s)", name, cand.version, decision, reason)
        return {"name": name, "decision": decision, "reason": reason, **figures,
                "champion_after": int(cand.version) if decision == "promoted"
                else figures["champion"]}

    @staticmethod
    def _unloadable(version: ModelVersion) -> str | None:
        """Why the version cannot serve (None when it loads): a champion must at least load.

        Loading checks the version's ``MLmodel`` (only the installed kzjobs's code runs)
        and every bundle file against its sha256 (:func:`kzjobs.release.registry.load_model`).
        """
        if version.status != "READY":
            return f"version status is {version.status}"
        try:
            load_model(version_ref(version.version, version.name))
        except Exception as exc:
            log.exception("version %s does not load", version.version)
            return f"does not load: {type(exc).__name__}: {exc}"
        return None

    @staticmethod
    def _f1(
        version: ModelVersion, heldout: str, hv: str, evaluate: Evaluator, *, tolerate: bool
    ) -> tuple[float | None, str | None]:
        """A version's F1 on the held-out set (cached in a tag); (None, why) on failure."""
        if version.status != "READY":
            if tolerate:
                return None, f"version status is {version.status}"
            raise RuntimeError(f"version {version.version} has status {version.status}")
        try:
            if (cached := version.tags.get(eval_tag(hv))) is not None:
                return _finite_f1(float(cached)), None
            summary = evaluate(version, heldout, hv)
            if summary.get("dataset_version") not in (None, hv):
                raise RuntimeError(
                    f"evaluated on {summary['dataset_version']}, expected held-out set {hv}"
                )
            f1 = _finite_f1(float(summary["f1"]))
        except Exception as exc:
            if not tolerate:
                raise
            log.exception("evaluating version %s failed", version.version)
            return None, f"{type(exc).__name__}: {exc}"
        client().set_model_version_tag(version.name, version.version, eval_tag(hv), repr(f1))
        return f1, None

    @staticmethod
    def _record(c: Any, cand: ModelVersion, decision: str, reason: str,
                figures: dict[str, Any]) -> None:
        tags = {
            "promotion.decision": decision,
            "promotion.reason": reason,
            "promotion.at": datetime.now(UTC).isoformat(timespec="seconds"),
            **{f"promotion.{k}": "" if v is None else str(v) for k, v in figures.items()},
        }
        for key, value in tags.items():
            c.set_model_version_tag(cand.name, cand.version, key, value)
