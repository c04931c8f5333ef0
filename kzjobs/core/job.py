"""Jobs are typed classes: their fields are the job's inputs, ``run()`` does the work
and returns a JSON-able summary. The CLI and the DAG plans are derived from the same
fields (``kzjobs.commands``), so a job runs the same in a test, a container or an
Airflow task, and its options are declared once: type, default and ``description``
(the option's help), plus a ``Cli`` mark where the command line spells it otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from kzjobs.core.profile import Profile, load_profile
from kzjobs.core.settings import Settings, get_settings
from kzjobs.core.store import Store, open_store


@dataclass(frozen=True)
class Cli:
    """How a field is spelled on the command line, when not ``--field-name``.

    ``names``: the option's names (``"--run"``; a bool's ``"--a/--b"``); ``argument``:
    positional; ``envvar``: read from the environment when not given; ``sep``: a list
    given as one option, its items joined by ``sep`` (``--formats alto,page``).
    """

    names: tuple[str, ...] = ()
    argument: bool = False
    envvar: str | None = None
    sep: str | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_uri: Annotated[str | None, Cli(("--store",), envvar="KZ_STORE")] = Field(
        None, description="Store root: a folder or s3://bucket/prefix.")
    profile_name: Annotated[str, Cli(("--profile", "-p"), envvar="KZ_PROFILE")] = Field(
        "demo", description="tiny, demo, bench, full or a YAML.")

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
