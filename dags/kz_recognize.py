"""kz_recognize: read a collection of pages with the champion blend.

Triggered by hand with a ``collection`` param, or by an event on the ``kz_incoming``
Asset whose extra names the collection (``{"collection": "incoming/batch-7"}``).
validate the batch (bad pages are quarantined with their reason) -> recognize in shards
-> merge -> outputs in the store (an event on ``kz_predictions``).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, chain, dag, task

from kzjobs.export import FORMATS
from kzjobs.orchestrate.launch import job, mapped_job
from kzjobs.orchestrate.plan import (
    COLLECTION_ASSET,
    PAGES_PER_BATCH,
    PREDICTIONS_ASSET,
    RecognizePlan,
    champion_ref,
    collection_from,
)

incoming = Asset(name=COLLECTION_ASSET[0], uri=COLLECTION_ASSET[1])
predictions = Asset(name=PREDICTIONS_ASSET[0], uri=PREDICTIONS_ASSET[1])


@dag(
    dag_id="kz_recognize",
    schedule=[incoming],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "collection": Param("", type="string", description="Collection: a key in the store "
                            "(page images, PDFs, TIFFs, IIIF manifests) or a IIIF manifest URL."),
        "profile": Param("demo", type="string",
                         description="Validation settings; the model brings its own."),
        "model": Param(champion_ref(), type="string", description="models:/ URI or bundle key."),
        "shards": Param(2, type="integer", minimum=1, description="Parallel recognition jobs."),
        "batch": Param(PAGES_PER_BATCH, type="integer", minimum=1,
                       description="Pages per level-2 call; a crash redoes at most this many."),
        "adapt": Param(None, type=["null", "boolean"],
                       description="Fit each book's class shifts on its own pages (two "
                       "passes); null: the model's own pseudo.class_shift."),
        "out_prefix": Param("predictions", type="string"),
        "formats": Param([], type="array", items={"type": "string", "enum": [*FORMATS]},
                         description="Library formats the merge writes: alto, page (PAGE "
                         "XML), tei, iiif (annotations), pdf (searchable, one per book)."),
        "base_url": Param("", type="string",
                          description="Public URL of the output prefix, for IIIF ids "
                          "(empty: the store's own URI)."),
    },
    tags=["kzjobs"],
    doc_md=__doc__,
)
def kz_recognize() -> None:
    @task(multiple_outputs=True)
    def plan(
        params: dict | None = None,
        run_id: str | None = None,
        triggering_asset_events: dict | None = None,
    ) -> dict:
        params = params or {}
        collection = collection_from(params, triggering_asset_events)
        return RecognizePlan.build(params, run_id or "manual", collection).args()

    p = plan()
    chain(
        p,
        job("validate", "validate batch", p["validate"]),
        # A shard whose worker dies (or whose job fails) runs again, on any worker, and
        # reads only its missing pages; the delay between tries is Airflow's
        # [core] default_task_retry_delay (300 s unless set). Validation and merge fail at
        # once: their errors are the data's, and a failed run should say so quickly.
        mapped_job("recognize", "recognize", p, retries=2),
        job("merge", "recognize merge", p["merge"], outlets=[predictions]),
    )


kz_recognize()
