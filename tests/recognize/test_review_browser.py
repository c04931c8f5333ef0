"""The review pages in a real browser: Debian's headless Chromium, driven by selenium.

Pages are recognised cheaply (synthetic scans from kzjobs.synth with hand-made results)
except in the last test, which opens what the recognize job itself wrote. Screenshots
are kept under pytest's tmp directory (``*.png``) for a person to look at.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.browser import chromium, missing
from bench.review import dense_page
from kzjobs.core.store import open_store
from kzjobs.data.books import book_id
from kzjobs.data.format import code_to_char
from kzjobs.recognize.outputs import Char, PageResult, merge, write_page
from kzjobs.recognize.review import book_script

pytestmark = pytest.mark.browser

LOW = 0.75  # the threshold the pages are written with (the setting's default)
GENJI = '源氏物語 "桐壺" <b>&.pdf'  # a book named after a file: quotes, markup, Japanese
# page id -> (book, 1-based page in its file, share of low-confidence characters)
PAGES = {"genji_p1": (GENJI, 1, 0.1), "genji_p2": (GENJI, 2, 0.6),
         "genji_p10": (GENJI, 10, 0.3), "synB_001": ("synB", 0, 0.0)}
BOX, RED = (0x1E, 0x88, 0xE5), (0xE5, 0x39, 0x35)  # the page's box and low-box strokes


@pytest.fixture(scope="module")
def browser():
    if reason := missing():
        pytest.skip(reason)
    with chromium() as driver:
        yield driver


def synthetic_page(image_id: str, book: str, page: int, low_share: float, seed: int
                   ) -> tuple[PageResult, Image.Image]:
    """A synthetic scan, its true boxes as the recognised characters, and ``low_share``
    of them below the threshold (at confidence 0.55; the others at 0.9-0.99)."""
    from kzjobs.synth.generator import book_style, render_page
    from kzjobs.synth.vocab import load_vocabulary

    layout, jpeg = render_page(book_style(seed, 0, "ipaex-mincho"), load_vocabulary(), seed,
                               0, page)
    rng = np.random.default_rng(seed)
    boxes = layout.boxes
    low = set(rng.permutation(len(boxes))[: round(low_share * len(boxes))].tolist())
    chars = [Char(b.code, b.x, b.y, b.w, b.h,
                  0.55 if i in low else round(float(rng.uniform(0.9, 0.99)), 4))
             for i, b in enumerate(boxes)]
    source = {"book": book, "name": "Genji scan.pdf", "page": page} if page else {}
    return (PageResult(image_id, layout.width, layout.height, chars, source),
            Image.open(io.BytesIO(jpeg)))


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    """A merged output with two books; also ``unmerged``: one page written, no merge."""
    root = tmp_path_factory.mktemp("review")
    store = open_store(root / "out")
    pages = {}
    for seed, (image_id, (book, page, share)) in enumerate(PAGES.items()):
        result, image = synthetic_page(image_id, book, page, share, seed)
        write_page(store, result, image, low_confidence=LOW)
        pages[image_id] = (result, image)
    merge(store, list(PAGES), low_confidence=LOW)
    lone = open_store(root / "unmerged")
    write_page(lone, *pages["genji_p2"], low_confidence=LOW)
    return {"root": root, "out": root / "out", "pages": pages,
            "unmerged": root / "unmerged" / "review" / "genji_p2.html"}


def open_page(driver, path) -> None:
    driver.get(path.as_uri())
    arrive(driver, path.name)


def arrive(driver, name: str) -> None:
    """Wait until the browser shows page ``name`` and its script has run."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/" + name) and (
        d.execute_script("return document.documentElement.dataset.ready === '1'")))


def screenshot(driver, path) -> np.ndarray:
    driver.save_screenshot(str(path))
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def page_path(review, image_id: str):
    return review["out"] / "review" / f"{image_id}.html"


_GEOMETRY = """
var img = document.getElementById("scan").getBoundingClientRect();
var boxes = Array.prototype.map.call(document.querySelectorAll("g.c"), function (g) {
  var r = g.querySelector("rect").getBoundingClientRect();
  var t = g.querySelector("text").getBoundingClientRect();
  return {i: +g.dataset.i, code: g.dataset.code, conf: +g.dataset.conf,
          low: g.classList.contains("low"), char: g.querySelector("text").textContent,
          rect: [r.left, r.top, r.width, r.height], text: [t.left, t.top, t.width, t.height]};
});
var scan = document.getElementById("scan");
return {img: [img.left, img.top, img.width, img.height], boxes: boxes,
        loaded: scan.complete && scan.naturalWidth > 0,
        scale: +document.getElementById("page").dataset.scale};
"""


def geometry(driver) -> dict:
    return driver.execute_script(_GEOMETRY)


def near(pixels: np.ndarray, x: float, y: float, colour, reach: int = 2) -> float:
    """The smallest distance to ``colour`` among the pixels within ``reach`` of (x, y)."""
    x, y = round(x), round(y)
    patch = pixels[max(0, y - reach): y + reach + 1, max(0, x - reach): x + reach + 1]
    return float(np.sqrt(((patch - np.array(colour)) ** 2).sum(axis=-1)).min())


def test_the_page_shows_the_scan_and_draws_each_box_where_the_json_says(browser, review,
                                                                         tmp_path):
    result, image = review["pages"]["genji_p2"]
    page = result.to_json()  # what pages/genji_p2.json holds: characters in reading order
    open_page(browser, page_path(review, "genji_p2"))
    geo = geometry(browser)
    assert geo["loaded"]
    # Self-contained: the scan is inline; the only file it loads is its book's page order,
    # beside it; no stylesheet, font or image from elsewhere.
    sources = browser.execute_script("""
        return {src: Array.prototype.map.call(document.querySelectorAll("[src]"),
                                              function (e) { return e.getAttribute("src"); }),
                links: document.querySelectorAll("link, iframe, object, embed").length,
                css: Array.prototype.map.call(document.querySelectorAll("style"),
                                              function (e) { return e.textContent; }).join("")};
    """)
    assert sorted(s[:23] for s in sources["src"]) == [book_script(GENJI)[:23],
                                                      "data:image/jpeg;base64,"]
    assert sources["links"] == 0 and "url(" not in sources["css"]
    left, top, width, height = geo["img"]
    scale = width / result.width
    assert height / result.height == pytest.approx(scale, rel=1e-3)
    assert geo["scale"] == pytest.approx(scale, rel=1e-3)
    assert 0 < width < 1400 and height > 500  # fitted to the window, not a thumbnail

    # The scan itself: with boxes and characters hidden, the screenshot is the page image.
    browser.find_element("id", "show-boxes").click()
    browser.find_element("id", "show-text").click()
    bare = screenshot(browser, tmp_path / "scan-only.png")
    shown = bare[round(top): round(top + height), round(left): round(left + width)]
    want = np.asarray(image.convert("RGB").resize(shown.shape[1::-1])).astype(int)
    diff = np.abs(shown - want).mean()
    flat = np.abs(shown - want.mean(axis=(0, 1))).mean()
    assert diff < 12 and diff < flat / 3, (diff, flat)
    browser.find_element("id", "show-boxes").click()
    browser.find_element("id", "show-text").click()

    # Each box where the JSON says, scaled, in reading order, with its character.
    pixels = screenshot(browser, tmp_path / "page.png")
    boxes = geo["boxes"]
    assert len(boxes) == len(page["characters"]) > 20
    for box, char in zip(boxes, page["characters"], strict=True):
        want = [left + char["x"] * scale, top + char["y"] * scale, char["w"] * scale,
                char["h"] * scale]
        assert box["rect"] == pytest.approx(want, abs=1.0), char
        assert (box["code"], box["char"]) == (char["code"], char["char"])
        assert box["low"] == (char["confidence"] < LOW)
        # the character is written just right of its box, starting at its top
        tx, ty, tw, th = box["text"]
        assert want[0] + want[2] - 1 <= tx <= want[0] + want[2] + 0.5 * want[2]
        assert want[1] - th <= ty <= want[1] + want[3] and tw > 0
    # ... and painted: the box's stroke colour on its left and top edges, red when low.
    lows = [b for b in boxes if b["low"]][:4]
    highs = [b for b in boxes if not b["low"]][:4]
    assert lows and highs
    for box in lows + highs:
        x, y, w, h = box["rect"]
        colour = RED if box["low"] else BOX
        assert near(pixels, x, y + h / 2, colour) < 60, box
        assert near(pixels, x + w / 2, y, colour) < 60, box
        # the middle of the box is the scan (tinted), not the stroke
        assert near(pixels, x + w / 2, y + h / 2, colour, reach=0) > 60, box


def test_hovering_a_box_shows_its_character_code_and_confidence(browser, review):
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, page_path(review, "genji_p2"))
    tip = browser.find_element("id", "tip")
    assert not tip.is_displayed()
    marks = browser.find_elements("css selector", "g.c")
    low = next(g for g in marks if "low" in g.get_attribute("class"))
    high = next(g for g in marks if "low" not in g.get_attribute("class"))
    for g in (low, high):
        code, conf = g.get_attribute("data-code"), float(g.get_attribute("data-conf"))
        ActionChains(browser).move_to_element(g.find_element("css selector", "rect")).perform()
        assert tip.is_displayed()
        assert tip.find_element("class name", "code").text == code
        assert tip.find_element("class name", "ch").text == code_to_char(code)
        assert tip.find_element("css selector", ".conf b").text == f"{conf:.2f}"
        assert ("low" in tip.get_attribute("class")) == (conf < LOW)
        assert "hover" in g.get_attribute("class")
        # the tooltip is beside the pointer, inside the window
        t, r = tip.rect, g.find_element("css selector", "rect").rect
        assert abs(t["x"] - (r["x"] + r["width"] / 2)) < 400
        assert t["x"] + t["width"] <= browser.execute_script("return innerWidth")
    # The transcript's character and its box are one: hovering either marks both.
    span = browser.find_element("css selector", '.transcript span[data-i="3"]')
    ActionChains(browser).move_to_element(span).perform()
    assert "hover" in browser.find_element("css selector", 'g.c[data-i="3"]').get_attribute(
        "class")
    assert tip.find_element("class name", "ch").text == span.text
    ActionChains(browser).move_to_element(browser.find_element("tag name", "h1")).perform()
    assert not tip.is_displayed()


def test_low_confidence_boxes_are_marked_under_the_stated_threshold_which_a_slider_moves(
        browser, review):
    result = review["pages"]["genji_p2"][0]
    open_page(browser, page_path(review, "genji_p2"))

    def marked():
        return (len(browser.find_elements("css selector", "g.c.low")),
                len(browser.find_elements("css selector", ".transcript span.low")),
                browser.find_element("id", "low-count").text)

    def want(threshold):
        n = sum(c.confidence < threshold for c in result.chars)
        return n, n, f"{n} low ({round(100 * n / len(result.chars))}%)"

    assert browser.find_element("id", "threshold-value").text == f"{LOW:.2f}"
    assert "KZ_REVIEW_LOW_CONFIDENCE" in browser.find_element("class name", "low-set").text
    assert marked() == want(LOW) and want(LOW)[0] > 0
    for threshold, expected in ((0.95, want(0.95)), (0.5, (0, 0, "0 low (0%)"))):
        browser.execute_script(
            "var r = document.getElementById('threshold'); r.value = arguments[0];"
            "r.dispatchEvent(new Event('input'));", threshold)
        assert browser.find_element("id", "threshold-value").text == f"{threshold:.2f}"
        assert marked() == expected
    assert want(0.95)[0] > want(LOW)[0]


def test_zoom_by_buttons_keys_and_wheel_scales_the_page_and_boxes_together(browser, review,
                                                                          tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    open_page(browser, page_path(review, "genji_p1"))

    def state():
        geo = geometry(browser)
        return geo["scale"], geo["img"][2], geo["boxes"][0]["rect"][2]

    fit, img_w, box_w = state()
    browser.find_element("id", "zoom-in").click()
    scale, img_w2, box_w2 = state()
    assert scale == pytest.approx(1.25 * fit, rel=1e-3)
    assert (img_w2 / img_w, box_w2 / box_w) == pytest.approx((1.25, 1.25), rel=1e-2)
    assert browser.find_element("id", "zoom-level").text == f"{round(scale * 100)}%"

    body = browser.find_element("tag name", "body")
    body.send_keys("+")
    assert state()[0] == pytest.approx(1.25 ** 2 * fit, rel=1e-3)
    body.send_keys("-")
    assert state()[0] == pytest.approx(1.25 * fit, rel=1e-3)
    body.send_keys("0")
    assert state()[0] == pytest.approx(fit, rel=1e-3)
    browser.find_element("id", "zoom-one").click()
    assert state()[0] == 1.0

    # The wheel zooms in about the pointer: the scan point under it stays put.
    body.send_keys("0")
    viewer = browser.find_element("id", "viewer")
    probe = "var i = document.getElementById('scan').getBoundingClientRect();" \
            "var v = document.getElementById('viewer').getBoundingClientRect();" \
            "var s = +document.getElementById('page').dataset.scale;" \
            "return [(v.left + v.width / 2 - i.left) / s, (v.top + v.height / 2 - i.top) / s];"
    before = browser.execute_script(probe)
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(viewer), 0, -300) \
        .perform()
    zoomed = state()[0]
    assert zoomed > 1.3 * fit
    assert browser.execute_script(probe) == pytest.approx(before, abs=2 / zoomed + 1)
    browser.save_screenshot(str(tmp_path / "zoomed.png"))

    # Dragging pans (at 1:1 the scan overflows the viewer both ways).
    browser.find_element("id", "zoom-one").click()
    scroll = "return [arguments[0].scrollLeft, arguments[0].scrollTop]"
    left, top = browser.execute_script(scroll, viewer)
    assert left > 120 and top > 90
    ActionChains(browser).drag_and_drop_by_offset(viewer, 120, -90).perform()
    assert browser.execute_script(scroll, viewer) == pytest.approx([left - 120, top + 90],
                                                                   abs=2)


def test_prev_and_next_go_through_the_book_in_page_order(browser, review):
    def position():
        links = {k: browser.find_element("id", k).get_attribute("href") for k in ("prev",
                                                                                   "next")}
        return (browser.find_element("id", "position").text,
                {k: v.rsplit("/", 1)[-1] if v else None for k, v in links.items()})

    # The book's order is its file's page order (1, 2, 10), not the ids' string order.
    open_page(browser, page_path(review, "genji_p1"))
    assert position() == ("page 1 of 3", {"prev": None, "next": "genji_p2.html"})
    browser.find_element("id", "next").click()
    arrive(browser, "genji_p2.html")
    assert position() == ("page 2 of 3", {"prev": "genji_p1.html", "next": "genji_p10.html"})
    browser.find_element("tag name", "body").send_keys("n")
    arrive(browser, "genji_p10.html")
    assert position() == ("page 3 of 3", {"prev": "genji_p2.html", "next": None})
    browser.find_element("tag name", "body").send_keys("p")
    arrive(browser, "genji_p2.html")

    # The book's name is shown as written, not read as markup.
    assert GENJI in browser.find_element("css selector", "header .where small").text
    assert browser.find_elements("css selector", "header b") == []
    open_page(browser, page_path(review, "synB_001"))
    assert position() == ("page 1 of 1", {"prev": None, "next": None})
    # A page written before the merge still opens; it says its book is not merged yet.
    open_page(browser, review["unmerged"])
    assert position() == ("book not merged yet", {"prev": None, "next": None})
    assert len(browser.find_elements("css selector", "g.c")) == len(
        review["pages"]["genji_p2"][0].chars)


def test_the_index_groups_books_and_puts_the_worst_pages_first(browser, review, tmp_path):
    open_page(browser, review["out"] / "review" / "index.html")
    browser.save_screenshot(str(tmp_path / "index.png"))
    sections = browser.find_elements("css selector", "section.book")
    assert [s.find_element("css selector", "h2 span").text for s in sections] == [GENJI,
                                                                                  "synB"]

    def rows(section):
        return [r.get_attribute("data-id") for r in section.find_elements("css selector",
                                                                          "tbody tr")]

    genji = sections[0]
    assert rows(genji) == ["genji_p2", "genji_p10", "genji_p1"]  # 60%, 30%, 10% low
    cells = genji.find_element("css selector", "tbody tr").find_elements("tag name", "td")
    result = review["pages"]["genji_p2"][0]
    low = sum(c.confidence < LOW for c in result.chars)
    assert [c.text for c in cells[1:4]] == ["2", str(len(result.chars)), str(low)]
    assert cells[4].text == f"{100 * low / len(result.chars):.1f}%"
    assert rows(sections[1]) == ["synB_001"]

    # Sortable: by page number, both ways, and by characters.
    order = genji.find_element("css selector", 'th[data-key="order"] button')
    order.click()
    assert rows(genji) == ["genji_p1", "genji_p2", "genji_p10"]
    order.click()
    assert rows(genji) == ["genji_p10", "genji_p2", "genji_p1"]
    genji.find_element("css selector", 'th[data-key="characters"] button').click()
    counts = [int(r.get_attribute("data-characters"))
              for r in genji.find_elements("css selector", "tbody tr")]
    assert counts == sorted(counts, reverse=True)
    # A page's link opens it.
    genji.find_element("css selector", 'tr[data-id="genji_p10"] a').click()
    arrive(browser, "genji_p10.html")


def test_a_page_of_1200_characters_loads_whole_and_its_search_finds_characters(browser,
                                                                               tmp_path):
    """Its load time is bench/review.py's figure, not asserted here."""
    result, image = dense_page(1200)
    store = open_store(tmp_path / "out")
    write_page(store, result, image, low_confidence=LOW)
    merge(store, [result.image_id], low_confidence=LOW)
    open_page(browser, tmp_path / "out" / "review" / f"{result.image_id}.html")
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.execute_script("return document.querySelectorAll('g.c').length") == 1200
    assert browser.execute_script(
        "return document.querySelectorAll('.transcript span').length") == 1200

    text = "".join(c["char"] for c in result.to_json()["characters"])  # reading order
    box = browser.find_element("id", "search")
    count = browser.find_element("id", "search-count")
    for query, n, marked in (("の", text.count("の"), text.count("の")),
                             ("U+306E", text.count("の"), text.count("の")),
                             ("にの", text.count("にの"), 2 * text.count("にの")),
                             ("鬱", 0, 0)):
        box.clear()
        box.send_keys(query)
        assert count.text == (f"{n} matches" if n != 1 else "1 match")
        assert len(browser.find_elements("css selector", "g.c.hit")) == marked
    assert text.count("の") > 5
    # Enter goes to the first match and brings it into view.
    box.clear()
    box.send_keys("の")
    browser.find_element("id", "zoom-one").click()
    box.send_keys("\n")
    assert count.text == f"1 of {text.count('の')}"
    current = browser.find_element("css selector", "g.c.current rect").rect
    viewer = browser.find_element("id", "viewer").rect
    assert viewer["x"] <= current["x"] <= viewer["x"] + viewer["width"]
    assert viewer["y"] <= current["y"] <= viewer["y"] + viewer["height"]
    browser.save_screenshot(str(tmp_path / "dense.png"))


def test_the_recognize_jobs_own_review_page_draws_its_json(browser, tmp_path):
    """What ``kzjobs recognize`` writes (a seeded blend over a synthetic book), opened."""
    from bench.workload import write_seeded_bundle
    from kzjobs.recognize.job import RecognizeJob
    from kzjobs.synth import generate

    store = open_store(tmp_path)
    generate(store.child("coll"), books=1, pages_per_book=2, seed=3, fonts=["ipaex-mincho"],
             labelled=False)
    write_seeded_bundle(store, "model")
    summary = RecognizeJob(store_uri=str(tmp_path), profile_name="tiny", collection="coll",
                           out="out", model="model", progress=False).run()
    assert summary["merge"]["recognized"] == 2
    ids = sorted(k.rsplit("/", 1)[-1][: -len(".json")] for k in store.list("out/pages"))
    page = store.read_json(f"out/pages/{ids[0]}.json")
    assert page["characters"]
    open_page(browser, tmp_path / "out" / "review" / f"{ids[0]}.html")
    geo = geometry(browser)
    left, top, width, _ = geo["img"]
    scale = width / page["width"]
    assert [(b["code"], b["char"]) for b in geo["boxes"]] == [
        (c["code"], c["char"]) for c in page["characters"]]
    for box, c in zip(geo["boxes"], page["characters"], strict=True):
        assert box["rect"] == pytest.approx(
            [left + c["x"] * scale, top + c["y"] * scale, c["w"] * scale, c["h"] * scale],
            abs=1.0)
    assert browser.find_element("id", "position").text == "page 1 of 2"
    assert browser.find_element("id", "next").get_attribute("href").endswith(
        f"/{ids[1]}.html")
    assert store.exists(f"out/review/{book_script(book_id(page['image_id']))}")
