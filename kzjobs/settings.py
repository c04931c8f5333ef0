"""Deployment settings, read from the environment (``KZ_*``) or a ``.env`` file.

Profiles say *how big* a model is; settings say *where* things live.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KZ_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path("var"), description="Local state: store, MLflow DB, logs.")
    store: str | None = Field(
        default=None, description="Store root URI: a folder or s3://bucket/prefix."
    )
    mlflow_uri: str | None = Field(default=None, description="MLflow tracking URI.")
    mlflow_artifacts: str | None = Field(
        default=None,
        description="Artifact root (e.g. s3://bucket/mlflow) when the tracking URI is a database.",
    )
    lock_uri: str | None = Field(
        default=None,
        description="PostgreSQL URI for the promotion lock when MLflow is behind a server.",
    )
    s3_max_attempts: int = Field(
        default=5, ge=1,
        description="Attempts per S3 request (botocore's standard retries), first included.",
    )
    review_low_confidence: float = Field(
        default=0.75, ge=0, le=1,
        description="Review pages highlight characters below this confidence, and the review "
        "index ranks pages by their share of them. Confidence is the sigmoid of the margin "
        "between a box's two best classes: 0.5 is a tie, 0.75 a margin of 1.1 logits.",
    )
    registry_model: str = "kz-recognizer"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    launcher: Literal["local", "docker", "kubernetes"] = "local"
    job_image: str = "ghcr.io/kzjobs/kzjobs-job:0.1.0"

    @property
    def store_uri(self) -> str:
        return self.store or str((self.home / "store").resolve())

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
