"""kz_promote: move the ``champion`` alias to the candidate only when it is better.

Runs after every retrain (an event on the ``kz_candidate`` Asset) and by hand. The job
compares the candidate with the champion on the same held-out books; a tie keeps the
champion; the decision and its figures become MLflow tags. One promotion at a time:
``max_active_runs=1`` here, and a lock that holds across workers in the job itself.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, dag, task

from kzjobs.orchestrate.launch import job
from kzjobs.orchestrate.plan import CANDIDATE_ASSET, promote_args

candidate = Asset(name=CANDIDATE_ASSET[0], uri=CANDIDATE_ASSET[1])


@dag(
    dag_id="kz_promote",
    schedule=[candidate],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "version": Param("candidate", type="string", description="Version number or alias."),
        "heldout": Param("", type="string", description="Held-out set; default: the version's."),
        "profile": Param("demo", type="string"),
    },
    tags=["kzjobs"],
    doc_md=__doc__,
)
def kz_promote() -> None:
    @task
    def plan(params: dict | None = None) -> list[str]:
        return promote_args(params or {})

    job("promote", "promote", plan())


kz_promote()
