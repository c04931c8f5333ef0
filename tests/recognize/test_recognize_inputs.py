"""``kzjobs recognize`` and ``kzjobs validate batch`` over a library's folder: a PDF, a
multi-page TIFF, a Japanese-named JPEG and a IIIF manifest served on 127.0.0.1, with bad
files among them. Every file is accounted for, each page keeps its source, and the
validation path judges the same pages."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.workload import write_seeded_bundle
from kzjobs.core.settings import get_settings
from kzjobs.core.store import open_store
from kzjobs.recognize.job import RecognizeJob
from kzjobs.synth import generate
from tests.data.sources import IIIFServer, encoded, tiff


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A store with the seeded blend, and a folder of a library's files."""
    from PIL import Image

    root = tmp_path_factory.mktemp("inputs")
    store = open_store(root / "store")
    write_seeded_bundle(store, "model")
    generate(store.child("gen"), books=1, pages_per_book=3, seed=5, fonts=["ipaex-mincho"],
             labelled=False)
    # fresh images: the decoded JPEGs' own info would reach the PDF writer's encoder
    pages = [Image.fromarray(np.asarray(Image.open(io.BytesIO(store.read_bytes(k)))
                                        .convert("RGB").resize((240, 360))))
             for k in store.list("gen/images")]
    folder = root / "library"
    folder.mkdir()
    buf = io.BytesIO()
    pages[0].save(buf, "JPEG")
    (folder / "源氏物語_001.jpg").write_bytes(buf.getvalue())
    (folder / "Kokin shu.pdf").write_bytes(encoded(pages[0], "PDF", save_all=True,
                                                   append_images=[pages[2]], resolution=72.0))
    (folder / "scroll.tif").write_bytes(tiff(pages[1:3]))
    (folder / "anim.gif").write_bytes(b"GIF89a" + bytes(20))
    (folder / "locked.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3\n1 0 obj << /Encrypt 2 0 R >>")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    with IIIFServer() as server:
        server.add_manifest("bk", 3, {"c1": pages[0], "c2": pages[1]})
        server.images.pop("c2")  # the second canvas points nowhere: 404
        (folder / "bk.json").write_bytes(server.manifests["bk"])
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KZ_FETCH_ALLOWED", json.dumps([server.base]))
            mp.setenv("KZ_FETCH_HOST_INTERVAL", "0")
            mp.setenv("KZ_FETCH_RETRIES", "0")
            get_settings.cache_clear()
            yield root, store, folder, server
    get_settings.cache_clear()


def test_a_library_folder_is_read_page_by_page_and_every_file_accounted_for(library):
    root, store, folder, server = library
    out = root / "out"
    summary = RecognizeJob(store_uri=store.uri, profile_name="tiny", model="model",
                           images=str(folder), out=str(out), progress=False).run()
    report = json.loads((out / "report.json").read_text())
    pages = {p.stem: json.loads(p.read_text()) for p in (out / "pages").iterdir()}
    assert sorted(pages) == ["Kokin_shu_p0001", "Kokin_shu_p0002", "bk_p0001",
                             "scroll_p0001", "scroll_p0002", "源氏物語_001"]
    assert summary["recognized"] == 6 and summary["quarantined"] == 1
    # 7 pages (one canvas fails to fetch) and 2 files refused; .DS_Store counted apart
    assert (report["pages_in"], report["recognized"], report["quarantined"]) == (9, 6, 3)
    why = {q["item"]: (q["stage"], q["reason"]) for q in report["quarantine"]}
    assert why["anim.gif"][1].startswith("unsupported file type .gif")
    assert why["locked"][1].startswith("broken PDF")
    assert why["bk_p0002"] == ("recognize", f"cannot fetch {server.base}/iiif/c2/full/max/0/"
                                            "default.jpg: HTTP 404")
    assert report["ignored"] == {"system file (.DS_Store)": 1}

    assert pages["Kokin_shu_p0002"]["source"] == {"book": "Kokin_shu",
                                                  "name": "Kokin shu.pdf", "page": 2}
    assert pages["scroll_p0001"]["source"] == {"book": "scroll", "name": "scroll.tif",
                                               "page": 1}
    assert pages["源氏物語_001"]["source"] == {"name": "源氏物語_001.jpg"}
    canvas = pages["bk_p0001"]["source"]
    assert canvas == {"book": "bk", "name": "bk.json", "page": 1,
                      "canvas": f"{server.base}/bk/canvas/1",
                      "manifest": f"{server.base}/bk/manifest.json", "canvas_size": [240, 360]}
    size = pages["Kokin_shu_p0001"]["width"], pages["Kokin_shu_p0001"]["height"]
    assert size == pytest.approx((240 * 300 / 72, 360 * 300 / 72), abs=1)  # KZ_PDF_DPI: 300
    # The manifest as read, for the IIIF outputs to link into.
    assert report["sources"] == ["sources/bk.manifest.json"]
    assert (out / "sources" / "bk.manifest.json").read_bytes() == server.manifests["bk"]
    submission = (out / "submission.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in submission[1:]] == sorted(pages)
    assert sum(len(p["characters"]) for p in pages.values()) > 0

    # The validation path judges the same pages: one item per page, one per bad file; a
    # canvas is not fetched there, so its 404 is recognition's to quarantine.
    from kzjobs.validate.job import ValidateJob

    checked = ValidateJob(store_uri=store.uri, profile_name="tiny", dataset=str(folder),
                          kind="batch", out="checks").run()
    assert (checked["items"], checked["passed"], checked["quarantined"]) == (9, 7, 2)
    assert checked["ignored"] == {"system file (.DS_Store)": 1}
    rejected = {q["item"]: q["reason"] for q in store.read_json("checks/quarantine.json")}
    assert set(rejected) == {"anim.gif", "locked"}
    assert "file not read" in rejected["anim.gif"]
    # (To a prefix of its own: its quarantine names other stages, and a published
    # prefix's outputs are written once.)
    again = RecognizeJob(store_uri=store.uri, profile_name="tiny", model="model",
                         collection=str(folder), out=str(root / "out-validated"),
                         validation="checks", progress=False).run()
    assert again["recognized"] == 6 and again["quarantined"] == 1
    merged = again["merge"]
    assert (merged["pages_in"], merged["recognized"], merged["quarantined"]) == (9, 6, 3)


def test_a_manifest_url_from_the_command_line(library):
    root, store, _folder, server = library
    server.add_manifest("one", 2, {"c3": server.images["c1"]})
    from kzjobs.cli import app

    result = CliRunner().invoke(app, [
        "recognize", "--model", "model", "--manifest", f"{server.base}/one/manifest.json",
        "--out", str(root / "out-url"), "--store", store.uri, "--profile", "tiny"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["merge"]["recognized"] == 1
    page = json.loads((root / "out-url" / "pages" / "one_p0001.json").read_text())
    assert page["source"]["manifest"] == f"{server.base}/one/manifest.json"
    assert (root / "out-url" / "sources" / "one.manifest.json").exists()
    assert (root / "out-url" / "review" / "one_p0001.html").exists()


def test_adapting_fits_each_pdfs_shifts_to_the_pdf_as_one_book(library):
    """``--adapt`` groups pages by their real book: the PDF ``Kokin shu.pdf`` (given alone
    to ``--images``) is book ``Kokin_shu`` (its ids' prefix before '_' would say
    ``Kokin``), and the report names the shifts of that book."""
    from kzjobs.release.bundle import Bundle

    root, store, folder, _server = library
    write_seeded_bundle(store, "with-shares")
    bundle_root = store.child("with-shares")
    Bundle.load(bundle_root).model_copy(update={
        "class_shares": {"U+3042": 0.8, "U+3044": 0.2}}).save(bundle_root)
    # one file of the folder: ``--images "library/Kokin shu.pdf"``
    summary = RecognizeJob(store_uri=store.uri, profile_name="tiny", model="with-shares",
                           images=str(folder / "Kokin shu.pdf"), out=str(root / "out-adapt"),
                           adapt=True, progress=False).run()
    assert summary["recognized"] == 2 and summary["adaptation"]["books"] == 1
    report = json.loads((root / "out-adapt" / "report.json").read_text())
    assert report["pages_in"] == 2  # the folder's other files are not this run's
    [(key, shifts)] = report["adaptation"].items()
    assert list(shifts) == ["Kokin_shu"]
    assert json.loads((root / "out-adapt" / key).read_text()) == shifts


def test_out_with_a_trailing_slash_is_the_same_key(library):
    """``--out out/`` as people type it (README's own example) is the store key ``out``,
    and a run over a folder names the submission's full location."""
    root, store, folder, _server = library
    (root / "scans").mkdir()
    (root / "scans" / "p1.jpg").write_bytes((folder / "源氏物語_001.jpg").read_bytes())
    job = RecognizeJob(store_uri=store.uri, profile_name="tiny", model="model",
                       images=str(root / "scans"), out="typed/", progress=False)
    assert job.out == "typed"
    summary = job.run()
    assert summary["merge"]["submission"] == f"{store.uri}/typed/submission.csv"
    assert store.exists("typed/submission.csv")
