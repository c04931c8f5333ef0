"""bench.formats: every input kind and library format measured, and what it measured is
the work it names (the PDF's pages come out at the DPI asked for)."""

from __future__ import annotations

import json

import pytest

from bench.formats import main
from kzjobs.export import FORMATS


def test_the_figures_file_has_every_input_and_format(tmp_path):
    out = tmp_path / "formats.json"
    main(["--pages", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["outputs"]) == set(FORMATS)
    assert all(f["kb_per_page"] > 0 for f in result["outputs"].values())
    inputs = result["inputs"]
    assert set(inputs) == {"jpeg", "pdf_200dpi", "pdf_300dpi"}
    # The PDF holds the scans at 300 DPI: rasterised at 300 it is the scan's size again.
    width, height = inputs["jpeg"]["size"]
    assert inputs["pdf_300dpi"]["size"] == pytest.approx([width, height], abs=1)
    assert inputs["pdf_200dpi"]["size"] == pytest.approx([width * 2 / 3, height * 2 / 3],
                                                         abs=1)
    assert result["characters_per_page"] > 0 and "cpu_isa" in result["machine"]
