"""Run the suites of :mod:`kzjobs.validate.suites` over fact tables with Great Expectations.

GX 1.x: an ephemeral context, a pandas data source, one whole-dataframe batch per
table. ``result_format=COMPLETE`` with ``unexpected_index_column_names`` names every
failing row (and box position), which is what the quarantine needs. GX is imported
inside the function: this module is reachable from the CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kzjobs.validate.suites import SUITES

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Outcome:
    """One expectation's result: its rows that failed, each a dict of index and values."""

    suite: str
    table: str
    expectation: str
    columns: list[str]
    reason: str
    success: bool
    evaluated: int
    unexpected: list[dict[str, Any]] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "expectation": self.expectation,
            "columns": self.columns,
            "reason": self.reason,
            "success": self.success,
            "evaluated": self.evaluated,
            "unexpected": len(self.unexpected),
            "items": len({u["row"] for u in self.unexpected}),
        }


def _plain(value: Any) -> Any:
    """numpy scalars to Python (for JSON and readable reasons)."""
    return value.item() if hasattr(value, "item") else value


def _raised(info: Any) -> str | None:
    """The exception message of a failed evaluation (GX nests it per metric sometimes)."""
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    for sub in info.values():
        if isinstance(sub, dict) and (message := _raised(sub)):
            return message
    return None


def import_gx() -> ModuleType:
    """Great Expectations, with its usage analytics off (it would phone home otherwise)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations

    return great_expectations


def run_suites(kind: str, tables: dict[str, pd.DataFrame], params: dict[str, Any]) -> list[Outcome]:
    """Validate each fact table of ``kind`` with its suite; every expectation's outcome."""
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # stderr stays quiet
    source = context.data_sources.add_pandas(f"kzjobs-{kind}")
    outcomes: list[Outcome] = []
    for table, specs in SUITES[kind].items():
        frame = tables[table]
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=f"{kind}.{table}",
                expectations=[
                    ExpectationConfiguration(
                        type=s["type"], kwargs=s["kwargs"], meta={"reason": s["reason"]}
                    ).to_domain_obj()
                    for s in specs
                ],
            )
        )
        batch = (
            source.add_dataframe_asset(table)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": frame})
        )
        index = [c for c in ("row", "position") if c in frame.columns]
        result = batch.validate(
            suite,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index},
            expectation_parameters=params,
        )
        for r in result.results:
            config = r.expectation_config
            if message := _raised(r.exception_info):
                # A suite that cannot run is a bug in the suite or facts, not bad data.
                raise RuntimeError(f"{kind}.{table}: {config.type} failed to run: {message}")
            kwargs = config.kwargs
            columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
            outcomes.append(
                Outcome(
                    suite=f"{kind}.{table}",
                    table=table,
                    expectation=config.type,
                    columns=columns,
                    reason=config.meta["reason"],
                    success=bool(r.success),
                    evaluated=int(r.result.get("element_count") or 0),
                    unexpected=[
                        {k: _plain(v) for k, v in u.items()}
                        for u in r.result.get("unexpected_index_list") or []
                    ],
                )
            )
    return outcomes
