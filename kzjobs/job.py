"""Jobs are typed classes: their fields are the job's inputs, ``run()`` does the work
and returns a JSON-able summary. The CLI and the DAG launcher build jobs from the
same fields, so a job runs the same in a test, a container or an Airflow task.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict

from kzjobs.profile import Profile, load_profile
from kzjobs.settings import Settings, get_settings
from kzjobs.store import Store, open_store


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_uri: str | None = None
    profile_name: str = "demo"

    @cached_property
    def settings(self) -> Settings:
        return get_settings()

    @cached_property
    def store(self) -> Store:
        return open_store(self.store_uri or self.settings.store_uri)

    @cached_property
    def profile(self) -> Profile:
        return load_profile(self.profile_name)

    def run(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__}.run")
