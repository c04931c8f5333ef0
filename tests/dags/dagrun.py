"""Run one DAG with ``dag.test()`` and print what happened as JSON (used by the tests).

Run in a subprocess with AIRFLOW_HOME pointing at a migrated metadata DB: Airflow
reads its configuration once per process, so each run gets a fresh one.

    python dagrun.py DAG_ID '{"param": "value"}'
"""

from __future__ import annotations

import json
import sys

MARKER = "@@DAGRUN@@"


def main(dag_id: str, conf: dict) -> dict:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=None)
    if bag.import_errors:
        return {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}
    run = bag.get_dag(dag_id).test(run_conf=conf)
    with create_session() as session:
        states = {
            f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
            for ti in run.get_task_instances(session=session)
        }
        xcoms = {}
        rows = session.query(XComModel).filter(
            XComModel.run_id == run.run_id, XComModel.dag_id == dag_id,
            XComModel.key == "return_value",
        )
        for row in rows:
            name = f"{row.task_id}[{row.map_index}]" if row.map_index >= 0 else row.task_id
            xcoms[name] = XComModel.deserialize_value(row)
    return {"state": str(run.state), "run_id": run.run_id, "tasks": states, "xcom": xcoms}


if __name__ == "__main__":
    result = main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
    print(MARKER + json.dumps(result, default=str))
