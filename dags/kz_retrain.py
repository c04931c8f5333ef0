"""kz_retrain: retrain the whole blend on a schedule and register a candidate.

pretrain (when starting weights are missing or stale) -> validate -> folds
-> detector per fold -> out-of-fold boxes -> classifiers per kind x fold
-> pseudolabels on the incoming collections -> fine-tune -> level 2 -> bundle
-> evaluate on held-out books -> register a candidate (an Asset event that starts
kz_promote). Every heavy step is a ``kzjobs`` job; tasks pass store keys, never data.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, chain, dag, task

from kzjobs.orchestrate.launch import job, mapped_job
from kzjobs.orchestrate.plan import CANDIDATE_ASSET, RetrainPlan

candidate = Asset(name=CANDIDATE_ASSET[0], uri=CANDIDATE_ASSET[1])


@dag(
    dag_id="kz_retrain",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    params={
        "profile": Param("demo", type="string", description="tiny, demo, bench, full or a YAML"),
        "dataset": Param("datasets/train", type="string", description="Labelled training set."),
        "heldout": Param(
            "datasets/heldout", type="string", description="Labelled books never trained on."
        ),
        "incoming": Param(
            [], type="array", items={"type": "string"},
            description="Unlabelled incoming collections to pseudolabel and adapt to.",
        ),
    },
    tags=["kzjobs"],
    doc_md=__doc__,
)
def kz_retrain() -> None:
    @task(multiple_outputs=True)
    def plan(params: dict | None = None, run_id: str | None = None) -> dict:
        return RetrainPlan.build(params or {}, run_id or "manual").args()

    p = plan()
    # Starting weights, trained only when missing or stale (else no job: skipped).
    pretrain = mapped_job("pretrain", "pretrain", p)
    validate = job("validate", "validate annotations", p["validate"], trigger_rule="none_failed")
    folds = job("folds", "folds", p["folds"])
    detect = mapped_job("detect_train", "detect train", p)
    oof = mapped_job("detect_oof", "detect predict", p)
    merge_oof = job("merge_oof", "merge-boxes", p["merge_oof"])
    classify = mapped_job("classify_train", "classify train", p)
    chain(p, pretrain, validate, folds, detect, oof, merge_oof, classify)

    # Writer adaptation on the incoming collections; with none, these mapped tasks are
    # skipped and level 2 trains on the first classifiers alone.
    incoming_boxes = mapped_job("detect_incoming", "detect predict", p)
    incoming_preds = mapped_job("classify_incoming", "classify predict", p)
    pseudo = job("pseudolabel", "pseudo", p["pseudolabel"])
    finetune = mapped_job("finetune", "classify train", p)
    chain(detect, incoming_boxes)
    chain([classify, incoming_boxes], incoming_preds, pseudo, finetune)

    level2 = job("level2", "level2 train", p["level2"], trigger_rule="none_failed_min_one_success")
    chain([classify, finetune], level2)
    chain(
        level2,
        job("bundle", "bundle", p["bundle"]),
        job("evaluate", "evaluate", p["evaluate"]),
        job("register", "register", p["register"], outlets=[candidate]),
    )


kz_retrain()
