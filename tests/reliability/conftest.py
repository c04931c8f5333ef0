"""Fixtures for reliability tests: S3 behind the project's fault-injecting proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.fault_proxy import FaultProxy, FaultyBucket, create_bucket


@pytest.fixture(scope="session")
def fault_proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    """One proxy in front of the session's moto server; each test sets its own plan."""
    with FaultProxy(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture
def s3_via_proxy(
    fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """AWS settings pointing boto3 at the proxy, which starts with no faults and no counts."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fault_proxy.faults_off()
    fault_proxy.reset_counts()
    yield fault_proxy
    fault_proxy.faults_off()  # a plan never leaks into the next test


@pytest.fixture
def faulty_bucket(s3_via_proxy: FaultProxy, s3_endpoint: str) -> FaultyBucket:
    """A fresh bucket behind the proxy (created on moto directly)."""
    bucket = create_bucket(s3_endpoint)
    return FaultyBucket(uri=f"s3://{bucket}", bucket=bucket, proxy=s3_via_proxy,
                        upstream=s3_endpoint)
