"""Every library format written from one recognised collection, each file checked with
a real reader; the merge rebuilds them byte for byte."""

from __future__ import annotations

import pytest
from lxml import etree
from typer.testing import CliRunner

from bench.workload import write_seeded_bundle
from kzjobs.core.store import open_store
from kzjobs.export import FORMATS
from kzjobs.export.validate import check_tei, check_xsd
from kzjobs.recognize.job import MergeJob, RecognizeJob
from kzjobs.recognize.outputs import PageResult
from kzjobs.synth import generate
from tests.export.readers import (
    check_annotation_page,
    columns,
    pdf_finds,
    pdf_pages_text,
    pdf_structure,
    tei_text,
)

BASE = "https://lib.example/predictions/coll"


@pytest.fixture(scope="module")
def recognised(tmp_path_factory):
    """A 2-page book read by the seeded blend, with every format asked for."""
    root = tmp_path_factory.mktemp("export")
    store = open_store(root)
    generate(store.child("coll"), books=1, pages_per_book=2, seed=5, fonts=["ipaex-mincho"],
             labelled=False)
    write_seeded_bundle(store, "model")
    summary = RecognizeJob(store_uri=str(root), profile_name="tiny", model="model",
                           collection="coll", out="out", progress=False,
                           formats="all", base_url=BASE).run()
    return root, store, summary


def _pages(store):
    pages = [PageResult.from_json(store.read_json(k)) for k in sorted(store.list("out/pages"))]
    assert len(pages) == 2 and all(p.chars for p in pages)
    return pages


def test_every_format_is_written_and_checks(recognised):
    _root, store, summary = recognised
    pages = _pages(store)
    book = pages[0].book
    assert {p.book for p in pages} == {book}
    assert summary["merge"]["formats"]["files"] == {
        "alto": 2, "page": 2, "tei": 1, "iiif": 2, "pdf": 1}
    assert "pdf_pages_without_image" not in summary["merge"]["formats"]
    report = store.read_json("out/report.json")
    assert report["formats"] == summary["merge"]["formats"]

    for page in pages:
        check_xsd("alto", store.read_bytes(f"out/alto/{page.image_id}.xml"))
        check_xsd("page", store.read_bytes(f"out/page/{page.image_id}.xml"))
        check_annotation_page(store.read_json(f"out/iiif/{page.image_id}.json"), page,
                              f"{BASE}/canvas/{page.image_id}")

    tei = store.read_bytes(f"out/tei/{book}.xml")
    check_tei(tei)
    assert tei_text(etree.fromstring(tei)) == [p.transcript().rstrip("\n") for p in pages]

    pdf = store.read_bytes(f"out/pdf/{book}.pdf")
    structure = pdf_structure(pdf)
    assert [s["images"]["/Im0"] for s in structure] == [(p.width, p.height) for p in pages]
    assert all(s["render_modes"] == [3] and s["to_unicode"] and s["embedded"]
               for s in structure)
    texts = pdf_pages_text(pdf)
    for n, (page, text) in enumerate(zip(pages, texts, strict=True)):
        # The characters in reading order (the engine may break a drifting column in
        # two lines; no character is lost, moved or added), and each column found whole.
        assert "".join(text.split()) == "".join(page.transcript().split())
        for column in columns(page):
            assert pdf_finds(pdf, n, column), column


def test_the_merge_rebuilds_every_format_byte_for_byte(recognised):
    root, store, _ = recognised
    before = {k: store.read_bytes(k) for k in store.list("out")
              if k.split("/")[1] in FORMATS}
    assert len(before) == 8
    # A crash that lost some files: the merge writes them again, the same bytes.
    for key in [k for k in before if k.endswith((".pdf", ".json"))]:
        store.delete(key)
    MergeJob(store_uri=str(root), collection="coll", out="out", formats=list(FORMATS),
             base_url=BASE).run()
    assert {k: store.read_bytes(k) for k in before} == before


def test_cli_merge_takes_formats_and_refuses_unknown_ones(recognised):
    root, store, _ = recognised
    from kzjobs.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["recognize", "merge", "--collection", "coll", "--out", "out2",
                              "--store", str(root), "--formats", "alto,hocr"])
    assert bad.exit_code != 0 and "hocr" in bad.output
    for key in store.list("out/pages"):
        store.write_bytes(key.replace("out/", "out2/", 1), store.read_bytes(key))
    ok = runner.invoke(app, ["recognize", "merge", "--collection", "coll", "--out", "out2",
                             "--store", str(root), "--formats", "alto,tei"])
    assert ok.exit_code == 0, ok.output
    written = {k.split("/")[1] for k in store.list("out2")}
    assert {"alto", "tei"} <= written and not {"page", "iiif", "pdf"} & written
    # Without a base URL, IIIF ids are the output prefix's own URI.
    runner.invoke(app, ["recognize", "merge", "--collection", "coll", "--out", "out2",
                        "--store", str(root), "--formats", "iiif"])
    page_id = store.list("out2/iiif")[0].rsplit("/", 1)[1]
    assert store.read_json(f"out2/iiif/{page_id}")["id"] == (
        f"{(root / 'out2').resolve().as_uri()}/iiif/{page_id}")
