"""Each library format from hand-made pages whose characters and order are known."""

from __future__ import annotations

import io
import json

import pypdfium2 as pdfium
import pytest
from lxml import etree
from PIL import Image

from kzjobs.core.store import open_store
from kzjobs.data.collection import manifest_key
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import code_to_char
from kzjobs.export import FORMATS, parse_formats
from kzjobs.export.alto import alto_page
from kzjobs.export.iiif import annotation_page
from kzjobs.export.pagexml import page_xml
from kzjobs.export.pdf import searchable_pdf
from kzjobs.export.tei import tei_book
from kzjobs.export.validate import InvalidDocument, check_tei, check_xsd, tei_problems
from kzjobs.export.write import write_formats
from kzjobs.recognize.outputs import Char, PageResult, page_key
from kzjobs.synth import generate
from tests.export.readers import (
    TEI,
    check_annotation_page,
    columns,
    pdf_finds,
    pdf_pages_text,
    pdf_structure,
    reading_order,
    tei_text,
)

ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"
PAGE = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
A, II, U, E, OO, KA = "U+3042", "U+3044", "U+3046", "U+3048", "U+304A", "U+304B"
HENTAIGANA = "U+1B002"  # past the BMP, and a glyph IPAex Mincho does not have


def sample_page(image_id: str = "bk_001", **source) -> PageResult:
    """Two columns: the right one (x~200) is read first, each top to bottom; the
    characters are listed out of order on purpose."""
    return PageResult(image_id, 400, 300, [
        Char(A, 100, 50, 40, 40, 0.9),    # left column, 1st
        Char(II, 205, 120, 40, 40, 0.8),  # right column, 2nd (drifted a little)
        Char(E, 98, 130, 40, 40, 0.6),    # left column, 2nd
        Char(U, 200, 40, 40, 40, 0.3),    # right column, 1st
        Char(OO, 203, 200, 38, 44, 0.95),  # right column, 3rd
    ], dict(source))


def test_the_sample_reads_as_expected():
    page = sample_page()
    assert page.transcript() == "ういお\nあえ\n"
    assert columns(page) == ["ういお", "あえ"]


def test_alto_lines_strings_and_glyphs_in_reading_order():
    page = sample_page()
    data = alto_page(page)
    check_xsd("alto", data)
    root = etree.fromstring(data)
    lines = root.findall(f".//{ALTO}TextLine")
    assert [line.get("BASEDIRECTION") for line in lines] == ["ttb", "ttb"]
    strings = [line.find(f"{ALTO}String") for line in lines]
    assert [s.get("CONTENT") for s in strings] == ["ういお", "あえ"]
    glyphs = [(g.get("CONTENT"), *(int(g.get(k)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")))
              for g in root.iter(f"{ALTO}Glyph")]
    assert glyphs == reading_order(page)
    assert [float(g.get("GC")) for g in root.iter(f"{ALTO}Glyph")] == [0.3, 0.8, 0.95, 0.9, 0.6]
    assert float(strings[1].get("WC")) == pytest.approx(0.75)
    # The schema check can fail: a confidence out of [0, 1] is refused.
    with pytest.raises(InvalidDocument, match="GC"):
        check_xsd("alto", data.replace(b'GC="0.3000"', b'GC="3"'))


def test_page_xml_regions_in_reading_order_with_glyph_coords_and_conf():
    page = sample_page()
    data = page_xml(page)
    check_xsd("page", data)
    root = etree.fromstring(data)
    refs = root.findall(f".//{PAGE}ReadingOrder/{PAGE}OrderedGroup/{PAGE}RegionRefIndexed")
    regions = {r.get("id"): r for r in root.iter(f"{PAGE}TextRegion")}
    ordered = [regions[r.get("regionRef")] for r in sorted(refs, key=lambda r: int(r.get("index")))]
    assert [r.find(f"{PAGE}TextEquiv/{PAGE}Unicode").text for r in ordered] == ["ういお", "あえ"]
    glyphs = []
    for g in root.iter(f"{PAGE}Glyph"):
        xs, ys = zip(*(map(int, p.split(",")) for p in g.find(f"{PAGE}Coords").get("points")
                       .split()), strict=True)
        glyphs.append((g.find(f"{PAGE}TextEquiv/{PAGE}Unicode").text, min(xs), min(ys),
                       max(xs) - min(xs), max(ys) - min(ys)))
    assert glyphs == reading_order(page)
    confs = [float(g.find(f"{PAGE}TextEquiv").get("conf")) for g in root.iter(f"{PAGE}Glyph")]
    assert confs == [0.3, 0.8, 0.95, 0.9, 0.6]
    assert all(w.get("readingDirection") == "top-to-bottom" for w in root.iter(f"{PAGE}Word"))
    with pytest.raises(InvalidDocument, match="points"):
        check_xsd("page", data.replace(b"<Coords points=", b"<Coords pts=", 1))


def test_empty_pages_are_valid_too():
    empty = PageResult("bk_009", 100, 80, [])
    check_xsd("alto", alto_page(empty))
    check_xsd("page", page_xml(empty))
    check_tei(tei_book("bk", [empty]))
    buf = io.BytesIO()
    assert searchable_pdf([(empty, None)], [], buf) == 1
    assert pdf_pages_text(buf.getvalue()) == [""]


def test_tei_book_pages_columns_and_characters_point_at_their_zones():
    pages = [sample_page("bk_001", page=1, name="源氏物語.pdf"),
             PageResult("bk_002", 400, 300, [Char(KA, 10, 10, 30, 30, 0.5)],
                        {"page": 2, "name": "源氏物語.pdf"})]
    data = tei_book("源氏物語", pages)
    check_tei(data)  # TEI P5 tei_all, and every pointer resolves
    root = etree.fromstring(data)
    assert root.tag == f"{TEI}TEI"
    assert tei_text(root) == ["ういお\nあえ", "か"]
    zones = {z.get("{http://www.w3.org/XML/1998/namespace}id"): z for z in root.iter(f"{TEI}zone")}
    chars = [(c.text, *(int(zones[c.get("facs")[1:]].get(k)) for k in ("ulx", "uly", "lrx", "lry")))
             for c in root.iter(f"{TEI}c")]
    expected = [(ch, x, y, x + w, y + h) for ch, x, y, w, h in reading_order(pages[0])]
    assert chars[:5] == expected
    surfaces = [s.get("{http://www.w3.org/XML/1998/namespace}id")
                for s in root.iter(f"{TEI}surface")]
    assert [pb.get("facs") for pb in root.iter(f"{TEI}pb")] == [f"#{s}" for s in surfaces]
    assert root.findtext(f".//{TEI}sourceDesc/{TEI}p") == "源氏物語.pdf"
    # No whitespace inside the text: it would be a space between two characters.
    assert "".join(root.find(f".//{TEI}body/{TEI}p").itertext()) == "ういおあえか"
    # The checks can fail: a dangling pointer and a repeated id are reported.
    broken = data.replace(b'facs="#p1c1g2"', b'facs="#nowhere"').replace(
        b'xml:id="p2c1g1"', b'xml:id="p1c1g1"')
    problems = tei_problems(broken)
    assert any("nowhere" in p for p in problems) and any("p1c1g1" in p for p in problems)
    with pytest.raises(InvalidDocument, match="nowhere"):
        check_tei(broken)
    # and so can the schema: a zone is no part of running text.
    with pytest.raises(InvalidDocument, match="tei: line"):
        check_tei(data.replace(b'<lb facs="#p1c2"/>', b'<zone/>'))


def test_iiif_annotation_page_targets_each_box_in_reading_order():
    page = sample_page()
    data = annotation_page(page, "https://lib.example/out/iiif/bk_001.json",
                           "https://lib.example/out")
    check_annotation_page(data, page, "https://lib.example/out/canvas/bk_001")
    manifested = sample_page(canvas="https://iiif.example/c/7")
    check_annotation_page(annotation_page(manifested, "https://x/a.json", "https://x"),
                          manifested, "https://iiif.example/c/7")


def test_searchable_pdf_text_in_reading_order_over_each_box(tmp_path):
    page = sample_page()
    other = PageResult("bk_002", 400, 300, [Char(KA, 10, 10, 30, 30, 0.5),
                                            Char(HENTAIGANA, 10, 50, 30, 30, 0.5)])
    image = Image.new("RGB", (400, 300), "white")
    chars = [ch for p in (page, other) for ch, *_ in reading_order(p)]
    buf = io.BytesIO()
    assert searchable_pdf([(page, image), (other, Image.new("L", (400, 300), 255))], chars,
                          buf) == 2
    data = buf.getvalue()
    # The text a viewer selects: each column a line, right to left, top to bottom; a
    # character past the BMP that the font cannot draw still copies as itself.
    assert pdf_pages_text(data) == ["ういお\nあえ", "か\U0001b002"]
    assert pdf_finds(data, 0, "ういお") and pdf_finds(data, 0, "あえ")
    assert not pdf_finds(data, 0, "いう")
    structure = pdf_structure(data)
    assert [s["images"] for s in structure] == [{"/Im0": (400, 300)}] * 2
    assert all(s["render_modes"] == [3] and s["encoding"] == "/Identity-V" and s["embedded"]
               and s["to_unicode"] for s in structure)
    assert [s["text_ops"] for s in structure] == [5, 2]
    doc = pdfium.PdfDocument(data)
    try:
        # 300 dpi by default: a pixel is 72/300 pt; each character lies over its box.
        pt = 72 / 300
        width, height = doc[0].get_size()
        assert (width, height) == pytest.approx((400 * pt, 300 * pt))
        text = doc[0].get_textpage()
        boxes = [text.get_charbox(i) for i in range(text.count_chars())
                 if text.get_text_range(i, 1).strip()]
        # Each character over its box: at its height, on its column's centre line.
        spans = {ch: (x0, x0 + w) for col in page.in_reading_order()
                 for x0, w in [(min(c.x for c in col), max(c.x + c.w for c in col)
                                - min(c.x for c in col))] for ch in map(_char, col)}
        for (left, bottom, right, top), (ch, _, y, _, h) in zip(boxes, reading_order(page),
                                                                strict=True):
            cx, cy = (left + right) / 2, (bottom + top) / 2
            assert height - (y + h) * pt <= cy <= height - y * pt
            assert spans[ch][0] * pt <= cx <= spans[ch][1] * pt
        # Invisible: the page renders as its (white) image alone.
        rendered = doc[0].render(scale=1).to_pil().convert("L")
        assert rendered.getextrema() == (255, 255)
    finally:
        doc.close()
    again = io.BytesIO()
    searchable_pdf([(page, image), (other, Image.new("L", (400, 300), 255))], chars, again)
    assert again.getvalue() == data  # deterministic


def _char(c: Char) -> str:
    return code_to_char(c.code)


def test_searchable_pdf_reads_a_realistic_page_exactly(tmp_path):
    """Synthetic pages' true boxes (columns that drift, characters of every size, small
    marks like ヽ between large kanji) read back through pdfium character for character."""
    store = open_store(tmp_path)
    generate(store.child("c"), books=1, pages_per_book=2, seed=5, fonts=["ipaex-mincho"],
             labelled=True)
    ds = Dataset.open("c", store)
    for image_id, boxes in sorted(ds.annotations.items()):
        image = ds.read_image(image_id)
        page = PageResult(image_id, image.width, image.height,
                          [Char(b.code, b.x, b.y, b.w, b.h, 0.9) for b in boxes])
        assert len(page.chars) > 100 and len(columns(page)) > 3
        buf = io.BytesIO()
        searchable_pdf([(page, image)], [ch for ch, *_ in reading_order(page)], buf)
        assert pdf_pages_text(buf.getvalue()) == ["\n".join(columns(page))]


def test_a_repeated_detection_is_not_dropped_as_an_overprint():
    # Two detections of one character on almost the same spot: both are in the
    # transcript, so both are in the PDF's text (pdfium drops exact overprints).
    page = PageResult("bk_003", 200, 200, [Char(KA, 50, 50, 40, 40, 0.9),
                                           Char(KA, 51, 51, 40, 40, 0.4),
                                           Char(A, 50, 100, 40, 40, 0.9)])
    assert page.transcript() == "かかあ\n"
    buf = io.BytesIO()
    searchable_pdf([(page, None)], ["か", "あ"], buf)
    assert pdf_pages_text(buf.getvalue()) == ["かかあ"]


def _store_pages(store, pages):
    for page in pages:
        store.write_json(page_key(page.image_id), page.to_json())


def test_write_formats_per_page_and_per_book(tmp_path):
    store = open_store(tmp_path)
    pages = [sample_page("bk_002", book="bk", page=2), sample_page("bk_001", book="bk", page=1),
             PageResult("zz_001", 50, 50, [Char(KA, 1, 1, 9, 9, 0.5)])]
    _store_pages(store, pages)
    report = write_formats(store, [p.image_id for p in pages], FORMATS,
                           base_url="https://lib.example/out/")
    # No image reader: the PDF pages carry their text over white, and say so.
    assert report == {"files": {"alto": 3, "page": 3, "tei": 2, "iiif": 3, "pdf": 2},
                      "pdf_pages_without_image": ["bk_001", "bk_002", "zz_001"]}
    assert sorted(store.list("pdf")) == ["pdf/bk.pdf", "pdf/zz.pdf"]
    for page in pages:
        check_xsd("alto", store.read_bytes(f"alto/{page.image_id}.xml"))
        check_xsd("page", store.read_bytes(f"page/{page.image_id}.xml"))
        check_annotation_page(store.read_json(f"iiif/{page.image_id}.json"), page,
                              f"https://lib.example/out/canvas/{page.image_id}")
    # Pages in book order (their page numbers), whatever the order of their ids.
    root = etree.fromstring(store.read_bytes("tei/bk.xml"))
    assert [s.get("n") for s in root.iter(f"{TEI}surface")] == ["bk_001", "bk_002"]
    assert pdf_pages_text(store.read_bytes("pdf/bk.pdf")) == ["ういお\nあえ"] * 2
    assert write_formats(store, ["bk_001"], []) == {}


def test_page_names_make_valid_urls_and_the_file_name_is_kept(tmp_path):
    # A page id goes into URLs quoted (inputs may make ids of Japanese names).
    page = sample_page("源氏物語 001")
    quoted = "%E6%BA%90%E6%B0%8F%E7%89%A9%E8%AA%9E%20001"
    check_annotation_page(annotation_page(page, "https://x.org/o/p.json", "https://x.org/o"),
                          page, f"https://x.org/o/canvas/{quoted}")
    store = open_store(tmp_path)
    page = sample_page("genji+1@a", name="源氏物語 001.jpg")
    _store_pages(store, [page])
    write_formats(store, [page.image_id], ["alto", "page", "iiif"], base_url="https://x.org/o")
    assert store.read_json("iiif/genji+1@a.json")["id"] == (
        "https://x.org/o/iiif/genji%2B1%40a.json")
    alto = etree.fromstring(store.read_bytes("alto/genji+1@a.xml"))
    assert alto.findtext(f".//{ALTO}fileName") == "源氏物語 001.jpg"
    pagexml = etree.fromstring(store.read_bytes("page/genji+1@a.xml"))
    assert pagexml.find(f"{PAGE}Page").get("imageFilename") == "源氏物語 001.jpg"


def _manifest_v3():
    return {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": "https://iiif.example/bk/manifest.json", "type": "Manifest",
        "label": {"ja": ["源氏物語"]},
        "items": [{"id": f"https://iiif.example/bk/canvas/{n}", "type": "Canvas",
                   "width": 400, "height": 300, "items": []} for n in (1, 2, 3)],
    }


def _manifest_v2():
    return {
        "@context": "http://iiif.io/api/presentation/2/context.json",
        "@id": "https://iiif.example/bk/manifest.json", "@type": "sc:Manifest",
        "label": "源氏物語",
        "sequences": [{"@type": "sc:Sequence", "canvases": [
            {"@id": f"https://iiif.example/bk/canvas/{n}", "@type": "sc:Canvas",
             "width": 400, "height": 300, "images": []} for n in (1, 2, 3)]}],
    }


def _manifest_pages():
    # Canvases 1 and 2 were recognised; canvas 3 was not (quarantined, say).
    return [sample_page(f"bk_{n:03d}", book="bk", page=n, manifest="https://iiif.example/bk/"
                        "manifest.json", canvas=f"https://iiif.example/bk/canvas/{n}")
            for n in (1, 2)]


def test_a_v3_manifest_gets_a_copy_with_its_annotation_pages_linked(tmp_path):
    store = open_store(tmp_path)
    pages = _manifest_pages()
    _store_pages(store, pages)
    store.write_json(manifest_key("bk"), _manifest_v3())
    base = "https://lib.example/out"
    write_formats(store, [p.image_id for p in pages], ["iiif"], base_url=base)
    copy = store.read_json("iiif/bk.manifest.json")
    assert copy["id"] == f"{base}/iiif/bk.manifest.json"
    assert copy["label"] == _manifest_v3()["label"]
    assert [c.get("annotations") for c in copy["items"]] == [
        [{"id": f"{base}/iiif/bk_001.json", "type": "AnnotationPage"}],
        [{"id": f"{base}/iiif/bk_002.json", "type": "AnnotationPage"}],
        None,
    ]
    for page in pages:
        check_annotation_page(store.read_json(f"iiif/{page.image_id}.json"), page,
                              page.source["canvas"])
    assert store.read_json(manifest_key("bk")) == _manifest_v3()  # the source is untouched
    first = store.read_bytes("iiif/bk.manifest.json")
    write_formats(store, [p.image_id for p in pages], ["iiif"], base_url=base)
    assert store.read_bytes("iiif/bk.manifest.json") == first


def test_a_v2_manifest_gets_other_content_lists(tmp_path):
    store = open_store(tmp_path)
    pages = _manifest_pages()
    _store_pages(store, pages)
    store.write_json(manifest_key("bk"), _manifest_v2())
    base = "https://lib.example/out"
    write_formats(store, [p.image_id for p in pages], "iiif", base_url=base)
    copy = store.read_json("iiif/bk.manifest.json")
    assert copy["@id"] == f"{base}/iiif/bk.manifest.json"
    canvases = copy["sequences"][0]["canvases"]
    assert [c.get("otherContent") for c in canvases] == [
        [{"@id": f"{base}/iiif/bk_001.list.json", "@type": "sc:AnnotationList"}],
        [{"@id": f"{base}/iiif/bk_002.list.json", "@type": "sc:AnnotationList"}],
        None,
    ]
    listed = store.read_json("iiif/bk_002.list.json")
    assert listed["@type"] == "sc:AnnotationList"
    assert [(r["resource"]["chars"], r["on"]) for r in listed["resources"]] == [
        (ch, f"https://iiif.example/bk/canvas/2#xywh={x},{y},{w},{h}")
        for ch, x, y, w, h in reading_order(pages[1])]


def test_formats_are_checked():
    assert parse_formats("pdf, alto") == ["alto", "pdf"]
    assert parse_formats("all") == list(FORMATS)
    assert parse_formats("") == [] and parse_formats(None) == []
    with pytest.raises(ValueError, match=r"unknown format.*hocr"):
        parse_formats("alto,hocr")
    json.dumps(FORMATS)
