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

    # Reading collections (kzjobs.data.collection).
    pdf_dpi: int = Field(
        default=300, ge=72, le=1200,
        description="PDF pages are rasterised at this DPI. 300 is what archives scan at, so "
        "a scanned book's page comes back near its own pixels and brush strokes keep the "
        "detail the classifiers were trained on; 200 reads faster at some cost in small "
        "kana.",
    )
    pdf_max_pages: int = Field(
        default=1000, ge=1,
        description="A PDF with more pages is quarantined whole, not half-read.",
    )
    fetch_allowed: list[str] = Field(
        default=["https://*"],
        description="What a IIIF manifest may make a job fetch: 'https://*' is any https "
        "host whose every address is public; a named host ('http://127.0.0.1:8080', "
        "'https://iiif.example.org') is allowed whatever its addresses. Loopback, "
        "link-local, private and reserved addresses are refused unless named.",
    )
    fetch_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to connect, and between bytes, per request.")
    fetch_retries: int = Field(
        default=3, ge=0, description="Retries of a failed fetch (with exponential backoff).")
    fetch_backoff: float = Field(
        default=1.0, ge=0, description="Backoff factor between retries, in seconds.")
    fetch_host_interval: float = Field(
        default=0.5, ge=0,
        description="Seconds between two requests to one host (a per-host rate limit).",
    )
    fetch_max_bytes: int = Field(
        default=100_000_000, gt=0, description="A larger response is refused.")
    iiif_max_size: int = Field(
        default=5000, ge=64,
        description="Longest side, in pixels, of a canvas image asked of an IIIF Image "
        "API (a larger image is asked scaled down).",
    )

    @property
    def store_uri(self) -> str:
        return self.store or str((self.home / "store").resolve())

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
