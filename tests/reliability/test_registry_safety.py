"""Registry safety: `champion` only ever moves to a better, evaluated blend.

tests/test_promote.py covers a worse candidate, a tie and a candidate that does not
load. Here: a candidate whose evaluation fails or gives no number, a champion that
cannot be judged, and two promotions started at the same instant in two processes, on
PostgreSQL (advisory lock) and on the embedded default (file lock).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from typing import Any

import pytest

from kzjobs.core.store import Store, open_store

# A promotion in its own process, held at a barrier until the parent says "go":
# the imports are done before "ready", so both processes reach the lock together.
_PROMOTER = """
import json, sys
from kzjobs.release.promote import PromoteJob
import kzjobs.release.registry, mlflow.pyfunc  # warm: the race starts at "go", not at import
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
out = PromoteJob(store_uri=sys.argv[1], profile_name="tiny", version=sys.argv[2],
                 lock_timeout=300).run()
print("@@" + json.dumps(out), flush=True)
"""


@pytest.fixture
def store(tmp_path) -> Store:
    return open_store(tmp_path / "store")


def _register(store: Store, make_bundle, make_heldout, tag: str, f1: float,
              heldout: str = "heldout") -> int:
    """A blend registered (as the candidate) with ``f1`` on the held-out set ``heldout``."""
    from kzjobs.data.dataset import Dataset
    from kzjobs.release import jobs as release
    from kzjobs.release import registry

    make_bundle(store, f"runs/{tag}", tag=tag)
    if not store.exists(f"{heldout}/train.csv"):
        make_heldout(store, heldout, books=("ha", "hb") if heldout == "heldout" else ("hc",))
    hv = registry.dataset_version(Dataset.open(heldout, store))
    ev = {"dataset": heldout, "dataset_version": hv, "f1": f1, "by_book": {}}
    return release.register_bundle(f"runs/{tag}", store, evaluation=ev, dataset=heldout,
                                    dataset_version=hv)["version"]


def _promote(store: Store, **kwargs: Any) -> dict[str, Any]:
    from kzjobs.release.promote import PromoteJob

    return PromoteJob(store_uri=store.uri, profile_name="tiny", lock_timeout=60, **kwargs).run()


def _champion() -> int | None:
    from kzjobs.release.registry import get_version

    v = get_version("champion")
    return int(v.version) if v else None


def _tags(version: int) -> dict[str, str]:
    from kzjobs.release.registry import get_version

    return get_version(version).tags


# ---- a candidate that fails evaluation never becomes champion --------------------------


def test_a_candidate_whose_evaluation_fails_is_rejected(store, make_bundle, make_heldout):
    """Judged on books it has no F1 for, the candidate is evaluated for real, and fails:
    its weight files are not weights. The champion stays, and the rejection is recorded."""
    v1 = _register(store, make_bundle, make_heldout, "a", 0.40)
    assert _promote(store)["decision"] == "promoted"
    v2 = _register(store, make_bundle, make_heldout, "b", 0.99)  # better on its own books...
    make_heldout(store, "heldout2", books=("hc",))

    out = _promote(store, heldout="heldout2")  # ...but the promotion judges on others
    assert (out["decision"], out["champion_after"], _champion()) == ("rejected", v1, v1)
    assert out["reason"].startswith("candidate failed") and out["candidate_f1"] is None
    assert "UnpicklingError" in out["reason"]  # it failed reading its weights, as arranged
    tags = _tags(v2)
    assert tags["promotion.decision"] == "rejected"
    assert tags["promotion.reason"] == out["reason"]
    assert tags["promotion.heldout"] == "heldout2"


def test_a_first_candidate_whose_evaluation_fails_does_not_become_champion(
        store, make_bundle, make_heldout):
    """No champion yet is no excuse: an unevaluated blend is not made the champion."""
    v1 = _register(store, make_bundle, make_heldout, "a", 0.40)
    make_heldout(store, "heldout2", books=("hc",))
    out = _promote(store, heldout="heldout2")
    assert (out["decision"], _champion()) == ("rejected", None)
    assert _tags(v1)["promotion.decision"] == "rejected"


@pytest.mark.parametrize("first", [True, False], ids=["no-champion", "with-champion"])
def test_a_candidate_whose_f1_is_not_a_number_is_rejected(first, store, make_bundle,
                                                         make_heldout):
    """NaN compares false both ways: as the first version it would be promoted, and as a
    champion it would never be beaten. A non-finite F1 is a failed evaluation."""
    if not first:
        v0 = _register(store, make_bundle, make_heldout, "z", 0.30)
        assert _promote(store)["decision"] == "promoted"
    v1 = _register(store, make_bundle, make_heldout, "a", float("nan"))
    out = _promote(store)
    assert out["decision"] == "rejected" and "not a finite number" in out["reason"]
    assert _champion() == (None if first else v0)
    assert _tags(v1)["promotion.decision"] == "rejected"


def test_a_champion_that_cannot_be_judged_keeps_the_alias(store, make_bundle, make_heldout):
    """Comparing needs the champion's F1 on the candidate's books; when evaluating the
    champion fails, the job fails loudly and nothing moves (no blind promotion)."""
    v1 = _register(store, make_bundle, make_heldout, "a", 0.40)
    assert _promote(store)["decision"] == "promoted"
    v2 = _register(store, make_bundle, make_heldout, "b", 0.99, heldout="heldout2")
    with pytest.raises(pickle.UnpicklingError):  # the fake weights, refused by torch.load
        _promote(store)
    assert _champion() == v1
    assert "promotion.decision" not in _tags(v2)


# ---- two promotions started together -----------------------------------------------------


def _race(store: Store, versions: list[int]) -> list[dict[str, Any]]:
    """Promote ``versions`` in one process each, released together; their summaries."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _PROMOTER, store.uri, str(v)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ))
        for v in versions
    ]
    try:
        for p in procs:  # the barrier: every process imported and waiting
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            stdout, _ = p.communicate(timeout=300)
            assert p.returncode == 0, stdout
            line = next(ln for ln in stdout.splitlines() if ln.startswith("@@"))
            outs.append(json.loads(line[2:]))
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _check_race(store: Store, make_bundle, make_heldout, lock: str) -> None:
    v1 = _register(store, make_bundle, make_heldout, "a", 0.50)
    assert _promote(store)["decision"] == "promoted"
    v2 = _register(store, make_bundle, make_heldout, "b", 0.60)
    v3 = _register(store, make_bundle, make_heldout, "c", 0.70)  # the best

    outs = _race(store, [v2, v3])
    assert {o["lock"] for o in outs} == {lock}

    # Serialized: one decision saw the old champion, the other saw the first's outcome.
    # Without the lock both read v1, and whichever moved the alias last would win.
    first = [o for o in outs if o["champion"] == v1]
    assert len(first) == 1, outs
    first = first[0]
    second = next(o for o in outs if o is not first)
    assert first["decision"] == "promoted" and first["champion_after"] == first["candidate"]
    assert second["champion"] == first["champion_after"], outs
    assert second["champion_f1"] == (0.60 if first["candidate"] == v2 else 0.70)

    # A consistent alias: the better candidate, whichever order the two ran in.
    assert _champion() == v3 == second["champion_after"]
    if second["candidate"] == v2:  # v3 first: the worse one arriving second is refused
        assert second["decision"] == "rejected" and "below" in second["reason"]
    else:
        assert second["decision"] == "promoted"

    # Both decisions are on record, each with the champion it was compared against.
    for o in outs:
        tags = _tags(o["candidate"])
        assert tags["promotion.decision"] == o["decision"]
        assert tags["promotion.champion"] == str(o["champion"])
        assert tags["promotion.lock"] == lock


def test_two_promotions_at_once_on_postgres(mlflow_on_postgres, store, make_bundle,
                                            make_heldout):
    _check_race(store, make_bundle, make_heldout, "postgresql")


def test_two_promotions_at_once_on_the_embedded_default(store, make_bundle, make_heldout):
    _check_race(store, make_bundle, make_heldout, "file")
