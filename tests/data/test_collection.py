"""Every kind of input a library has, read, and its bad variants refused with a reason.

The files are made here (Pillow, PDFium's writer via Pillow, pypdf for encryption); IIIF
manifests and images come from a real HTTP server on 127.0.0.1 (tests/data/sources.py).
"""

from __future__ import annotations

import io
import itertools
import json
import unicodedata

import numpy as np
import pytest
from PIL import Image

from kzjobs.core.images import ImageError
from kzjobs.core.settings import Settings
from kzjobs.core.store import open_store
from kzjobs.data.collection import Collection, manifest_key, page_id
from tests.data.sources import IIIFServer, encoded, page, pdf, tiff


def scan(folder, **settings):
    coll = Collection(open_store(folder), ("",), settings=Settings(**settings))
    return coll, coll.scan


def reasons(result) -> dict[str, str]:
    return {r.item: r.reason for r in result.rejected}


def test_page_images_of_every_format_are_read_as_rgb_pages(tmp_path):
    img = page()
    (tmp_path / "a_001.jpg").write_bytes(encoded(img, "JPEG"))
    (tmp_path / "a_002.PNG").write_bytes(encoded(img, "PNG"))
    (tmp_path / "a_003.jp2").write_bytes(encoded(img, "JPEG2000"))
    (tmp_path / "a_004.webp").write_bytes(encoded(img, "WEBP", lossless=True))
    (tmp_path / "a_005.tif").write_bytes(tiff([img]))  # one frame: a page like any other
    coll, result = scan(tmp_path)
    assert [p.id for p in result.pages] == ["a_001", "a_002", "a_003", "a_004", "a_005"]
    assert not result.rejected
    for ref in result.pages:
        read = coll.read(ref)
        assert (read.mode, read.size) == ("RGB", img.size), ref
        assert ref.book is None and ref.source() == {"name": ref.name}
        # the strokes are where they were drawn (JPEG and JPEG 2000 within their loss)
        assert np.abs(np.asarray(read, float) - np.asarray(img, float)).mean() < 4, ref


def test_a_multi_page_tiff_is_a_book_of_its_frames(tmp_path):
    frames = [page(shade=s) for s in (0, 100, 200)]
    thumb = page((30, 45))
    # A scanner's reduced-resolution copy after the pages (NewSubfileType 1) is no page.
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=[*frames[1:], thumb],
                   tiffinfo={254: 0})
    data = bytearray(buf.getvalue())
    with Image.open(io.BytesIO(bytes(data))) as img:
        assert img.n_frames == 4
    from PIL import TiffImagePlugin

    out = io.BytesIO()
    with TiffImagePlugin.AppendingTiffWriter(out) as writer:
        for n, frame in enumerate([*frames, thumb]):
            frame.save(writer, "TIFF", tiffinfo={254: 1 if n == 3 else 0})
            writer.newFrame()
    (tmp_path / "genji-vol_1.tiff").write_bytes(out.getvalue())
    coll, result = scan(tmp_path)
    assert [(p.id, p.book, p.page) for p in result.pages] == [
        (f"genji-vol_1_p000{n}", "genji-vol_1", n) for n in (1, 2, 3)]
    shades = [int(np.asarray(coll.read(p))[180, 26].mean()) for p in result.pages]
    assert shades == [0, 100, 200]
    assert result.pages[1].source() == {"book": "genji-vol_1", "name": "genji-vol_1.tiff",
                                        "page": 2}


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(tmp_path, fmt):
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16).repeat(80, 0).repeat(20, 1)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    (tmp_path / f"master.{fmt.lower()}").write_bytes(encoded(img, fmt))
    coll, result = scan(tmp_path)
    read = np.asarray(coll.read(result.pages[0]))
    assert read.shape == (80, 80, 3)
    assert [int(read[0, x, 0]) for x in (0, 20, 40, 60)] == [0, 4, 128, 255]


def test_cmyk_alpha_and_exif_rotation_read_as_the_page_a_person_sees(tmp_path):
    cmyk = Image.new("CMYK", (80, 120), (0, 0, 0, 0))
    cmyk.paste((0, 0, 0, 255), (10, 10, 30, 110))  # black ink stroke
    (tmp_path / "c_cmyk.jpg").write_bytes(encoded(cmyk, "JPEG", quality=95))
    rgba = Image.new("RGBA", (80, 120), (0, 0, 0, 0))  # transparent: the paper shows
    rgba.paste((0, 0, 0, 255), (10, 10, 30, 110))
    (tmp_path / "c_rgba.png").write_bytes(encoded(rgba, "PNG"))
    # A camera page stored sideways: 120 wide, 80 high, EXIF orientation 6 (turn 90° CW).
    stored = Image.new("RGB", (120, 80), "white")
    stored.paste((0, 0, 0), (0, 0, 10, 10))  # top-left as stored -> top-right when upright
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "c_turned.jpg").write_bytes(encoded(stored, "JPEG", exif=exif, quality=95))
    coll, result = scan(tmp_path)
    read = {p.id: np.asarray(coll.read(p)).astype(int) for p in result.pages}
    for ident in ("c_cmyk", "c_rgba"):
        assert read[ident].shape == (120, 80, 3)
        assert read[ident][60, 60].min() > 240, ident  # paper is white
        assert read[ident][60, 20].max() < 40, ident  # ink is black
    upright = read["c_turned"]
    assert upright.shape == (120, 80, 3)  # 80 wide, 120 high
    assert upright[3, 76].max() < 60 and upright[3, 3].min() > 200


def test_a_pdf_is_a_book_of_pages_rendered_at_the_stated_dpi(tmp_path):
    (tmp_path / "Kokinshu 1.pdf").write_bytes(pdf(3, size=(240, 360), resolution=72.0))
    coll, result = scan(tmp_path, pdf_dpi=144)
    assert [(p.id, p.book, p.page) for p in result.pages] == [
        (f"Kokinshu_1_p000{n}", "Kokinshu_1", n) for n in (1, 2, 3)]
    images = [coll.read(p) for p in result.pages]
    assert {im.size for im in images} == {(480, 720)}  # 240x360 pt at 144 DPI
    assert [int(np.asarray(im)[360, 52].mean()) for im in images] == pytest.approx(
        [0, 20, 40], abs=3)
    assert result.pages[2].source() == {"book": "Kokinshu_1", "name": "Kokinshu 1.pdf",
                                        "page": 3}


def test_bad_pdfs_are_refused_whole_with_their_reason(tmp_path):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(pdf(2))))
    writer.encrypt("secret")
    locked = io.BytesIO()
    writer.write(locked)
    (tmp_path / "locked.pdf").write_bytes(locked.getvalue())
    (tmp_path / "broken.pdf").write_bytes(pdf(2)[:300])
    (tmp_path / "long.pdf").write_bytes(pdf(4))
    (tmp_path / "ok.pdf").write_bytes(pdf(2))
    _coll, result = scan(tmp_path, pdf_max_pages=3)
    assert [p.id for p in result.pages] == ["ok_p0001", "ok_p0002"]
    why = reasons(result)
    assert why["locked"] == "encrypted PDF: it needs a password"
    assert why["broken"].startswith("broken PDF")
    assert why["long"].startswith("PDF of 4 pages, over the limit of 3")


def test_every_file_is_read_refused_or_counted(tmp_path):
    img = page()
    (tmp_path / "a_001.jpg").write_bytes(encoded(img, "JPEG"))
    (tmp_path / "anim.gif").write_bytes(encoded(img.convert("P"), "GIF"))
    (tmp_path / "notes.txt").write_text("not a page")
    (tmp_path / "README").write_text("no suffix")
    (tmp_path / ".hidden.jpg").write_bytes(encoded(img, "JPEG"))
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf")
    (tmp_path / "._a_001.jpg").write_bytes(b"\0\5\26\7")
    (tmp_path / "a_001.png").write_bytes(encoded(img, "PNG"))  # the same id as a_001.jpg
    (tmp_path / "a_002.jpg").write_bytes(encoded(img, "JPEG"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a_009.jpg").write_bytes(encoded(img, "JPEG"))
    _coll, result = scan(tmp_path)
    assert [p.id for p in result.pages] == ["a_002"]
    why = reasons(result)
    assert why["anim.gif"].startswith("unsupported file type .gif")
    assert why["notes.txt"].startswith("unsupported file type .txt")
    assert why["README"].startswith("unsupported file type (no suffix)")
    assert why[".hidden.jpg"] == "hidden file"
    assert [r.key for r in result.rejected if r.item == "a_001"] == ["a_001.jpg", "a_001.png"]
    assert all("2 files give page id 'a_001'" in r.reason for r in result.rejected
               if r.item == "a_001")
    assert result.ignored == {"system file (.DS_Store)": 1, "system file (Thumbs.db)": 1,
                              "system file (._*)": 1,
                              "in a subfolder (a folder's own files are its pages)": 1}
    # 11 files: 1 page, 6 refused (two for one id), 4 counted as not pages
    assert len(result.pages) + len(result.rejected) + sum(result.ignored.values()) == 11


@pytest.mark.parametrize(("name", "ident"), [
    ("源氏物語_001", "源氏物語_001"), ("Scan 001", "Scan_001"), ("Scan (2)", "Scan_2"),
    (unicodedata.normalize("NFD", "がっこう"), "がっこう"), ("_001", "001"), ("ü", "ü"),
])
def test_file_names_become_safe_stable_ids(name, ident):
    assert page_id(name) == ident
    from kzjobs.core.store import validate_key

    assert validate_key(ident) == ident  # one store key part


@pytest.mark.parametrize("name", ["a/b", "..", "a\\b", "x:y", "-rf", "a\x00b", "line\nbreak",
                                  "~~"])
def test_path_tricks_are_refused_not_rewritten(name):
    from kzjobs.data.collection import UnsafeName

    with pytest.raises(UnsafeName):
        page_id(name)


def test_a_long_name_fits_a_file_name_and_stays_distinct():
    a, b = page_id("源" * 200 + "1"), page_id("源" * 200 + "2")
    assert a != b and len(a.encode()) <= 180 and len(f"{a}.json".encode()) < 255


def test_the_competition_folder_reads_test_images_in_sample_submission_order(tmp_path):
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import LABEL_COLUMNS, write_rows

    img = encoded(page(), "JPEG")
    for folder, ids in (("train_images", ["t_1", "t_2"]), ("test_images", ["z_9", "b_1", "x_3"])):
        (tmp_path / folder).mkdir()
        for i in ids:
            (tmp_path / folder / f"{i}.jpg").write_bytes(img)
    (tmp_path / "train.csv").write_bytes(write_rows(LABEL_COLUMNS, [("t_1", ""), ("t_2", "")]))
    sample = ["z_9", "missing_1", "b_1", "../train_images/t_1"]
    (tmp_path / "sample_submission.csv").write_bytes(
        write_rows(LABEL_COLUMNS, [(i, "") for i in sample]))
    coll = Collection.of(open_store(tmp_path))
    result = coll.scan
    assert [p.id for p in result.pages] == ["z_9", "b_1"] and result.order == sample
    why = reasons(result)
    assert why["missing_1"] == "no image for this id in test_images/"
    assert why["../train_images/t_1"].startswith("unsafe image id in sample_submission.csv")
    assert why["x_3"] == "not in sample_submission.csv"
    assert result.ignored == {"not this run's pages (train_images/)": 2}
    # Training still reads train_images/ with train.csv.
    ds = Dataset.open(str(tmp_path))
    assert ds.image_ids() == ["t_1", "t_2"] and ds.read_image("t_2").size == (240, 360)


# ---- IIIF -------------------------------------------------------------------------------


@pytest.fixture
def iiif():
    with IIIFServer() as server:
        yield server


@pytest.mark.parametrize("version", [2, 3])
def test_a_iiif_manifest_url_is_a_book_of_its_canvases(iiif, version):
    url = iiif.add_manifest("bk1", version, {"img1": page(shade=0), "img2": page(shade=90)})
    coll = Collection.open(url, settings=Settings(fetch_allowed=[iiif.base],
                                                  fetch_host_interval=0))
    result = coll.scan
    assert [(p.id, p.book, p.page) for p in result.pages] == [("bk1_p0001", "bk1", 1),
                                                              ("bk1_p0002", "bk1", 2)]
    assert result.pages[1].source() == {
        "book": "bk1", "name": url, "page": 2, "canvas": f"{iiif.base}/bk1/canvas/2",
        "manifest": url, "canvas_size": [240, 360]}
    shades = [int(np.asarray(coll.read(p))[180, 26].mean()) for p in result.pages]
    assert shades == pytest.approx([0, 90], abs=4)
    size = "max" if version == 3 else "full"
    assert [p for p, _ in iiif.requests] == [
        "/bk1/manifest.json", f"/iiif/img1/full/{size}/0/default.jpg",
        f"/iiif/img2/full/{size}/0/default.jpg"]
    assert json.loads(result.manifests["bk1"]) == json.loads(iiif.manifests["bk1"])
    assert manifest_key("bk1") == "sources/bk1.manifest.json"


def test_a_large_canvas_is_asked_scaled_down_through_the_image_api(iiif):
    url = iiif.add_manifest("big", 3, {"wide": page((900, 600)), "tall": page((600, 900))})
    coll = Collection.open(url, settings=Settings(fetch_allowed=[iiif.base], iiif_max_size=300,
                                                  fetch_host_interval=0))
    sizes = [coll.read(p).size for p in coll.scan.pages]
    assert sizes == [(300, 200), (200, 300)]
    assert {p for p, _ in iiif.requests[1:]} == {"/iiif/wide/full/300,/0/default.jpg",
                                                 "/iiif/tall/full/,300/0/default.jpg"}


def test_a_manifest_in_the_collection_is_read_and_a_bad_one_refused(iiif, tmp_path):
    iiif.add_manifest("bk2", 2, {"img3": page()})
    (tmp_path / "bk2.json").write_bytes(iiif.manifests["bk2"])
    (tmp_path / "nowhere.json").write_text(json.dumps({"type": "Manifest", "items": []}))
    (tmp_path / "other.json").write_text('{"a": 1}')
    coll, result = scan(tmp_path, fetch_allowed=[iiif.base], fetch_host_interval=0)
    assert [p.id for p in result.pages] == ["bk2_p0001"]
    assert coll.read(result.pages[0]).size == (240, 360)
    why = reasons(result)
    assert why == {"nowhere": "manifest not read: a manifest with no canvases",
                   "other": "manifest not read: not a IIIF manifest: type None"}


def test_fetches_outside_the_allowed_hosts_are_refused_before_any_connection(iiif):
    """The default allows public https hosts only: a manifest at a private or loopback
    address, or at a name that resolves to one, is refused; so is plain http."""
    iiif.add_manifest("bk3", 3, {"img4": page()})
    for url, why in (
        ("https://10.1.2.3/iiif/manifest.json", "resolves to 10.1.2.3, not a public address"),
        ("https://192.168.0.7/m/manifest.json", "resolves to 192.168.0.7"),
        ("https://169.254.169.254/latest/manifest.json", "resolves to 169.254.169.254"),
        ("https://[::1]/manifest.json", "resolves to ::1"),
        ("https://localhost/manifest.json", "resolves to 127.0.0.1"),
        (f"{iiif.base}/bk3/manifest.json", "is not in the allowed hosts"),
    ):
        result = Collection.open(url, settings=Settings()).scan
        assert not result.pages
        [rejected] = result.rejected
        assert rejected.reason.startswith("manifest not read: refused") and why in rejected.reason
    assert iiif.requests == []  # nothing reached the server


def test_a_slow_canvas_times_out_and_the_rest_goes_on(iiif):
    iiif.slow.add("slow")
    iiif.delay = 2.0
    url = iiif.add_manifest("bk4", 3, {"fast": page(), "slow": page()})
    coll = Collection.open(url, settings=Settings(fetch_allowed=[iiif.base], fetch_timeout=0.3,
                                                  fetch_retries=1, fetch_backoff=0,
                                                  fetch_host_interval=0))
    fast, slow = coll.scan.pages
    assert coll.read(fast).size == (240, 360)
    with pytest.raises(ImageError, match="timed out"):
        coll.read(slow)
    # one try and one retry
    assert [p for p, _ in iiif.requests].count("/iiif/slow/full/max/0/default.jpg") == 2


def test_fetches_retry_follow_checked_redirects_and_keep_their_pace(iiif):
    from kzjobs.core.fetch import Fetcher, FetchError

    iiif.add_manifest("bk5", 3, {"img5": page()})
    iiif.fail_once.add("img5")
    fetcher = Fetcher(Settings(fetch_allowed=[iiif.base], fetch_backoff=0,
                               fetch_host_interval=0.2))
    image = f"{iiif.base}/iiif/img5/full/max/0/default.jpg"
    assert Image.open(io.BytesIO(fetcher.get(image))).size == (240, 360)
    assert [p for p, _ in iiif.requests].count("/iiif/img5/full/max/0/default.jpg") == 2
    iiif.redirects["/moved"] = image
    iiif.redirects["/inside"] = "http://10.0.0.1/secret"
    assert fetcher.get(f"{iiif.base}/moved")[:2] == b"\xff\xd8"
    with pytest.raises(FetchError, match="not in the allowed hosts"):
        fetcher.get(f"{iiif.base}/inside")
    with pytest.raises(FetchError, match="not an http"):  # a canvas image at file:///...
        fetcher.get("file:///etc/passwd")
    with pytest.raises(FetchError, match=r"'\.\.' in the path"):
        fetcher.get(f"{iiif.base}/iiif/../bk5/manifest.json")
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher.get(f"{iiif.base}/nothing-here")
    # At most one request per 0.2 s to the host (a lower bound: it cannot flake).
    times = [t for p, t in iiif.requests if p in ("/moved", "/inside", "/nothing-here")]
    assert len(times) == 3 and all(b - a >= 0.19 for a, b in itertools.pairwise(times))


def test_pdf_tiff_and_named_pages_read_from_s3(s3_env):
    """The same collection on S3 (moto's server): files come as bytes, not paths."""
    store = open_store(f"{s3_env}/coll")
    store.write_bytes("images/book.pdf", pdf(2))
    store.write_bytes("images/scroll.tif", tiff([page(shade=0), page(shade=120)]))
    store.write_bytes("images/a.gif", b"GIF89a")
    coll = Collection.of(store, settings=Settings(pdf_dpi=72))
    result = coll.scan
    assert [p.id for p in result.pages] == ["book_p0001", "book_p0002", "scroll_p0001",
                                            "scroll_p0002"]
    assert list(reasons(result)) == ["a.gif"]
    sizes = [coll.read(p).size for p in result.pages]
    assert sizes == [(240, 360)] * 4
    shades = [int(np.asarray(coll.read(p))[180, 26].mean()) for p in result.pages[2:]]
    assert shades == [0, 120]


def test_one_file_on_its_own_is_a_collection(tmp_path):
    (tmp_path / "book.pdf").write_bytes(pdf(2))
    (tmp_path / "other.jpg").write_bytes(encoded(page(), "JPEG"))
    for coll in (Collection.folder(str(tmp_path / "book.pdf")),
                 Collection.open(str(tmp_path / "book.pdf"))):
        assert [p.id for p in coll.scan.pages] == ["book_p0001", "book_p0002"]
        assert not coll.scan.rejected and not coll.scan.ignored
