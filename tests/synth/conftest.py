"""A small synthetic dataset shared by the synth tests (made once per session)."""

from __future__ import annotations

import pytest

SAMPLE_FONTS = ("kouzan-sousyo", "aoyagi-kouzan", "ipaex-mincho")


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory):
    """(store, summary) of 3 books x 2 pages, one book per font."""
    from kzjobs.core.store import open_store
    from kzjobs.synth import generate

    store = open_store(tmp_path_factory.mktemp("synth") / "ds")
    summary = generate(store, books=3, pages_per_book=2, seed=5, fonts=SAMPLE_FONTS)
    return store, summary
