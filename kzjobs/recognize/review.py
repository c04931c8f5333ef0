"""The review pages a person opens: one per recognised page, and an index of them.

Each page is one self-contained HTML file (the scan as a JPEG data URI, the boxes as
inline SVG, plain inline CSS and JS: no server, no framework, no external asset), so it
opens the same from a folder, ``file://`` or S3. It has zoom (buttons, keys, the wheel;
drag to pan), each box's character, code and confidence in a tooltip, low-confidence
boxes highlighted under a stated threshold (a slider moves it), a search that marks and
counts matching characters, the transcript (hovering a character marks its box), and
links to the previous and next page of its book.

Neighbours. A page is written as soon as it is read, usually before its neighbours
exist, and shards read a book's pages in any order; only the merge knows a book's pages.
So the merge writes one small script per book, ``books/<digest>.js`` (its pages in order
with their counts), which the page loads with a ``<script>`` tag. Not an ``index.json``
read with ``fetch()``: browsers refuse ``fetch`` of ``file://`` URLs, and a page opened
from a folder must work. Not the merge rewriting every page: each embeds its scan
(hundreds of KB), and a re-run that reads one page would rewrite them all. A page
never depends on the merge's bytes, so re-runs and merges stay byte-identical.

Everything from the data (ids, book and file names, characters) is escaped for where it
goes: HTML text and attributes, JSON inside ``<script>``, and URLs (percent-encoded).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from statistics import median
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kzjobs.data.format import code_to_char

if TYPE_CHECKING:
    from PIL import Image

    from kzjobs.recognize.outputs import Char, PageResult

# Height of the scan embedded in a page: enough to read a character at 2-3x zoom on a
# full page, at about 0.4-0.8 MB of JPEG per page.
THUMBNAIL_HEIGHT = 1800
BOOKS = "books"


def page_href(image_id: str) -> str:
    """The relative URL of a page's review file (ids may hold spaces, ``#``, Japanese)."""
    return quote(image_id, safe="") + ".html"


def book_script(book: str) -> str:
    """Where the merge writes a book's page order, relative to the review folder.

    A digest, not the name: a book may be named after a file (``源氏物語 "桐壺".pdf``)."""
    return f"{BOOKS}/{hashlib.sha256(book.encode('utf-8')).hexdigest()[:16]}.js"


def _script_json(value: Any) -> str:
    """JSON safe inside an HTML ``<script>``: no ``</script>``, ``<!--`` or line separators
    (U+2028/9, which end a line in older JS engines) can appear in it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def thumbnail_data_uri(image: Image.Image, height: int = THUMBNAIL_HEIGHT) -> str:
    """A JPEG data URI, so the review page is self-contained on any store (S3 too)."""
    scale = min(1.0, height / image.height)
    thumb = image.convert("RGB").resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    )
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _source_line(result: PageResult) -> str:
    """Where the page came from, when its id does not say it all: file, page, canvas."""
    src = result.source
    parts = [src["name"]] if src.get("name") else []
    if src.get("page"):
        parts.append(f"page {src['page']}")
    if src.get("canvas"):
        parts.append(f"canvas {src['canvas']}")
    return ", ".join(str(p) for p in parts)


_PAGE_STYLE = """
:root{--bar:#1f2430;--bar-text:#e8ebf2;--muted:#9aa3b5;--box:#1e88e5;--low:#e53935;
--hit:#ffb300;--accent:#8ab4ff}
*{box-sizing:border-box}
html,body{height:100%;margin:0}
body{display:grid;grid-template-rows:auto 1fr;overflow:hidden;color:#1f2430;background:#eceae4;
font:14px/1.4 system-ui,-apple-system,"Segoe UI","Noto Sans CJK JP","IPAexGothic",sans-serif}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.2rem;padding:.55rem 1rem;
background:var(--bar);color:var(--bar-text);box-shadow:0 1px 4px #0004;z-index:2}
header h1{margin:0;font-size:1.05rem;font-weight:600;word-break:break-all}
header .where{display:flex;flex-direction:column;min-width:10rem;max-width:28rem}
header .where small{color:var(--muted);word-break:break-all}
header a{color:var(--accent);text-decoration:none}
header a:hover{text-decoration:underline}
.group{display:flex;align-items:center;gap:.4rem}
.pager a{padding:.2rem .6rem;border:1px solid #4a5266;border-radius:5px}
.pager a:not([href]){color:#5d6578;border-color:#363c4a;pointer-events:none}
.pager .pos{color:var(--muted);min-width:6.5rem;text-align:center}
button{font:inherit;color:var(--bar-text);background:#2e3545;border:1px solid #4a5266;
border-radius:5px;padding:.15rem .6rem;cursor:pointer}
button:hover{background:#3a4356}
output{font-variant-numeric:tabular-nums}
#zoom-level{min-width:3.4rem;text-align:center}
input[type=search]{font:inherit;width:13rem;padding:.2rem .5rem;border-radius:5px;
border:1px solid #4a5266;background:#fff;color:#111}
#search-count{color:var(--muted);min-width:6rem}
#search-count.found{color:#ffd54f}
.low-set .row{display:flex;align-items:center;gap:.5rem;font-variant-numeric:tabular-nums}
.low-set b{color:var(--low);font-weight:700;white-space:nowrap}
.low-set label{cursor:default}
.note,.keys{margin:.4rem 0 0;font-size:.8rem;color:#6b7280}
.legend.show{margin-top:.35rem;color:#6b7280}
code{font-size:.9em}
input[type=range]{width:7rem;accent-color:var(--low)}
label{display:flex;align-items:center;gap:.3rem;cursor:pointer}
main{display:grid;grid-template-columns:minmax(0,1fr) minmax(15rem,26rem);min-height:0}
.viewer{display:flex;overflow:auto;background:#3d414a;cursor:grab;touch-action:none;
user-select:none;outline:none}
.viewer.panning{cursor:grabbing}
.page{position:relative;flex:none;margin:auto;box-shadow:0 2px 12px #0007;background:#fff}
.page img{display:block;width:100%;height:100%}
.page svg{position:absolute;left:0;top:0;width:100%;height:100%;overflow:visible}
g.c rect{fill:rgba(30,136,229,.07);stroke:var(--box);stroke-width:1.6px;
vector-effect:non-scaling-stroke}
g.c text{fill:#0d47a1;stroke:#fff;stroke-opacity:.85;paint-order:stroke;font-weight:700;
pointer-events:none}
g.c.low rect{fill:rgba(229,57,53,.16);stroke:var(--low);stroke-width:2.2px}
g.c.low text{fill:#b71c1c}
g.c.hit rect{fill:rgba(255,179,0,.42);stroke:#ff6f00;stroke-width:3px}
g.c.current rect{stroke:#000;stroke-width:3.5px}
g.c.hover rect{stroke:#111;stroke-width:3px;fill:rgba(255,255,255,.15)}
svg.no-text g.c text{display:none}
svg.no-boxes g.c rect{stroke:none;fill:none}
svg.no-boxes g.c.hit rect{fill:rgba(255,179,0,.42)}
aside{display:flex;flex-direction:column;min-height:0;background:#faf9f6;
border-left:1px solid #d6d2c8}
aside section{padding:.7rem 1rem;border-bottom:1px solid #e4e0d6}
aside h2{margin:0 0 .35rem;font-size:.8rem;letter-spacing:.06em;text-transform:uppercase;
color:#6b7280}
dl{display:grid;grid-template-columns:auto 1fr;gap:.1rem .8rem;margin:0}
dd{margin:0;font-variant-numeric:tabular-nums}
.legend{display:flex;flex-wrap:wrap;align-items:center;gap:.3rem .9rem;font-size:.85rem}
.legend i{display:inline-block;width:.95rem;height:.95rem;margin-right:.3rem;
vertical-align:-.15rem;border:2px solid var(--box);background:rgba(30,136,229,.07)}
.legend i.low{border-color:var(--low);background:rgba(229,57,53,.16)}
.legend i.hit{border-color:#ff6f00;background:rgba(255,179,0,.42)}
kbd{font:inherit;padding:0 .3rem;border:1px solid #cfcabe;border-radius:3px;background:#fff}
.transcript{flex:1;min-height:0;display:flex;flex-direction:column;padding-bottom:0}
.transcript .text{flex:1;min-height:0;overflow:auto;writing-mode:vertical-rl;white-space:nowrap;
font-size:1.45rem;line-height:1.8;font-family:"IPAexMincho","Noto Serif CJK JP",serif;
padding-bottom:.7rem}
.transcript p{margin:0 0 0 .2rem}
.transcript span{cursor:pointer;border-radius:3px}
.transcript span.low{background:#ffcdd2}
.transcript span.hit{background:#ffe082}
.transcript span.hover{background:#1f2430;color:#fff}
.tip{position:fixed;z-index:10;pointer-events:none;display:grid;
grid-template-columns:auto auto;gap:.05rem .75rem;align-items:center;padding:.45rem .75rem;
background:#fff;color:#1f2430;border-radius:8px;box-shadow:0 4px 18px #0005;
border-left:5px solid var(--box);font-variant-numeric:tabular-nums}
.tip.low{border-left-color:var(--low)}
.tip[hidden]{display:none}
.tip .ch{grid-row:span 3;font-size:2.4rem;line-height:1;
font-family:"IPAexMincho","Noto Serif CJK JP",serif}
.tip .conf b{font-weight:700}
.tip.low .conf b{color:var(--low)}
.tip .place{color:#6b7280;font-size:.85em}
"""

# Plain JS (ES2017), no framework: zoom/pan, tooltip, threshold, search, neighbours.
_PAGE_SCRIPT = r"""
(function () {
"use strict";
var data = JSON.parse(document.getElementById("page-data").textContent);
var $ = function (id) { return document.getElementById(id); };
var viewer = $("viewer"), page = $("page"), svg = $("boxes"), tip = $("tip");
var marks = Array.prototype.slice.call(svg.querySelectorAll("g.c"));
var spans = Array.prototype.slice.call(document.querySelectorAll(".transcript span"));
var chars = marks.map(function (g) { return g.lastChild.textContent; });
var W = data.width, H = data.height, scale = 1, fitted = true;

function fitScale() {
  return Math.min((viewer.clientWidth - 24) / W, (viewer.clientHeight - 24) / H);
}
function setScale(s, cx, cy) {
  var min = Math.min(fitScale(), 1) / 2;
  s = Math.max(min, Math.min(8, s));
  var r = viewer.getBoundingClientRect(), p = page.getBoundingClientRect();
  if (cx === undefined) { cx = r.width / 2; cy = r.height / 2; }
  var ix = (r.left + cx - p.left) / scale, iy = (r.top + cy - p.top) / scale;
  scale = s;
  page.style.width = W * s + "px";
  page.style.height = H * s + "px";
  page.setAttribute("data-scale", s.toFixed(4));
  p = page.getBoundingClientRect();
  viewer.scrollLeft += p.left + ix * s - (r.left + cx);
  viewer.scrollTop += p.top + iy * s - (r.top + cy);
  $("zoom-level").textContent = Math.round(s * 100) + "%";
}
function zoom(factor, cx, cy) { fitted = false; setScale(scale * factor, cx, cy); }
function fit() { fitted = true; setScale(fitScale()); }
$("zoom-in").onclick = function () { zoom(1.25); };
$("zoom-out").onclick = function () { zoom(0.8); };
$("zoom-fit").onclick = fit;
$("zoom-one").onclick = function () { fitted = false; setScale(1); };
window.addEventListener("resize", function () { if (fitted) fit(); });
viewer.addEventListener("wheel", function (e) {
  e.preventDefault();
  var r = viewer.getBoundingClientRect();
  var dy = e.deltaMode === 1 ? e.deltaY * 33 : e.deltaY;
  zoom(Math.exp(-dy * 0.0015), e.clientX - r.left, e.clientY - r.top);
}, {passive: false});

var drag = null;
viewer.addEventListener("pointerdown", function (e) {
  if (e.button !== 0) return;
  drag = {x: e.clientX, y: e.clientY, left: viewer.scrollLeft, top: viewer.scrollTop};
  viewer.setPointerCapture(e.pointerId);
  viewer.classList.add("panning");
});
viewer.addEventListener("pointermove", function (e) {
  if (!drag) return;
  viewer.scrollLeft = drag.left - (e.clientX - drag.x);
  viewer.scrollTop = drag.top - (e.clientY - drag.y);
});
function endDrag() { drag = null; viewer.classList.remove("panning"); }
viewer.addEventListener("pointerup", endDrag);
viewer.addEventListener("pointercancel", endDrag);

var threshold = data.low_confidence;
function isLow(i) { return parseFloat(marks[i].getAttribute("data-conf")) < threshold; }
function setThreshold(t) {
  threshold = t;
  var low = 0;
  for (var i = 0; i < marks.length; i++) {
    var on = isLow(i);
    low += on;
    marks[i].classList.toggle("low", on);
    if (spans[i]) spans[i].classList.toggle("low", on);
  }
  $("threshold-value").textContent = t.toFixed(2);
  var share = marks.length ? Math.round(100 * low / marks.length) : 0;
  $("low-count").textContent = low + " low (" + share + "%)";
}
$("threshold").addEventListener("input", function (e) {
  setThreshold(parseFloat(e.target.value));
});

var hovered = -1;
function setHover(i, x, y) {
  if (hovered >= 0) {
    marks[hovered].classList.remove("hover");
    if (spans[hovered]) spans[hovered].classList.remove("hover");
  }
  hovered = i;
  if (i < 0 || drag) { tip.hidden = true; return; }
  var g = marks[i];
  g.classList.add("hover");
  if (spans[i]) spans[i].classList.add("hover");
  tip.querySelector(".ch").textContent = chars[i];
  tip.querySelector(".code").textContent = g.getAttribute("data-code");
  tip.querySelector(".conf b").textContent =
    parseFloat(g.getAttribute("data-conf")).toFixed(2);
  tip.querySelector(".place").textContent =
    "column " + (+g.getAttribute("data-col") + 1) + ", character " +
    (+g.getAttribute("data-row") + 1);
  tip.classList.toggle("low", isLow(i));
  tip.hidden = false;
  var w = tip.offsetWidth, h = tip.offsetHeight;
  tip.style.left = Math.min(x + 16, window.innerWidth - w - 4) + "px";
  tip.style.top = Math.min(y + 16, window.innerHeight - h - 4) + "px";
}
function indexOf(el) {
  var g = el && el.closest ? el.closest("[data-i]") : null;
  return g ? +g.getAttribute("data-i") : -1;
}
svg.addEventListener("mousemove", function (e) {
  setHover(indexOf(e.target), e.clientX, e.clientY);
});
svg.addEventListener("mouseleave", function () { setHover(-1); });
var transcript = $("transcript");
transcript.addEventListener("mousemove", function (e) {
  setHover(indexOf(e.target), e.clientX, e.clientY);
});
transcript.addEventListener("mouseleave", function () { setHover(-1); });
transcript.addEventListener("click", function (e) {
  var i = indexOf(e.target);
  if (i >= 0) show(i);
});

function show(i) {
  var b = marks[i].getBoundingClientRect(), r = viewer.getBoundingClientRect();
  viewer.scrollLeft += b.left + b.width / 2 - (r.left + r.width / 2);
  viewer.scrollTop += b.top + b.height / 2 - (r.top + r.height / 2);
}

var hits = [], current = -1;
function search(query) {
  var i, k;
  for (i = 0; i < hits.length; i++) {
    marks[hits[i]].classList.remove("hit", "current");
    if (spans[hits[i]]) spans[hits[i]].classList.remove("hit");
  }
  hits = []; current = -1;
  var q = query.trim(), starts = [], n = 0;
  if (/^u\+[0-9a-f]{4,6}$/i.test(q)) {
    q = q.toUpperCase();
    for (i = 0; i < marks.length; i++) {
      if (marks[i].getAttribute("data-code") === q) { hits.push(i); starts.push(i); }
    }
    n = starts.length;
  } else if (q) {
    var want = Array.from(q.replace(/\s+/g, ""));
    for (i = 0; i + want.length <= chars.length; i++) {
      for (k = 0; k < want.length && chars[i + k] === want[k]; k++);
      if (k === want.length) {
        starts.push(i);
        for (k = 0; k < want.length; k++) hits.push(i + k);
      }
    }
    n = starts.length;
  }
  for (i = 0; i < hits.length; i++) {
    marks[hits[i]].classList.add("hit");
    if (spans[hits[i]]) spans[hits[i]].classList.add("hit");
  }
  hits.starts = starts;
  var out = $("search-count");
  out.textContent = q ? (n === 1 ? "1 match" : n + " matches") : "";
  out.classList.toggle("found", n > 0);
  return n;
}
function step(by) {
  var starts = hits.starts || [];
  if (!starts.length) return;
  if (current >= 0) marks[starts[current]].classList.remove("current");
  current = (current + by + starts.length) % starts.length;
  marks[starts[current]].classList.add("current");
  show(starts[current]);
  $("search-count").textContent = (current + 1) + " of " + starts.length;
}
var box = $("search");
box.addEventListener("input", function () { search(box.value); });
box.addEventListener("keydown", function (e) {
  if (e.key === "Enter") { e.preventDefault(); step(e.shiftKey ? -1 : 1); }
  if (e.key === "Escape") { box.value = ""; search(""); box.blur(); }
});

$("show-text").addEventListener("change", function (e) {
  svg.classList.toggle("no-text", !e.target.checked);
});
$("show-boxes").addEventListener("change", function (e) {
  svg.classList.toggle("no-boxes", !e.target.checked);
});

document.addEventListener("keydown", function (e) {
  if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
  var go = {"+": function () { zoom(1.25); }, "=": function () { zoom(1.25); },
    "-": function () { zoom(0.8); }, "0": fit, "1": function () { fitted = false; setScale(1); },
    "/": function () { box.focus(); },
    "n": function () { if ($("next").href) location.href = $("next").href; },
    "p": function () { if ($("prev").href) location.href = $("prev").href; }}[e.key];
  if (go) { e.preventDefault(); go(); }
});

var book = window.KZ_REVIEW_BOOK;
var pos = $("position");
if (book && book.book === data.book) {
  var here = -1;
  for (var i = 0; i < book.pages.length; i++) if (book.pages[i].id === data.id) here = i;
  if (here >= 0) {
    pos.textContent = "page " + (here + 1) + " of " + book.pages.length;
    if (here > 0) $("prev").href = book.pages[here - 1].href;
    if (here + 1 < book.pages.length) $("next").href = book.pages[here + 1].href;
  } else {
    pos.textContent = "not in the merged book";
  }
} else {
  pos.textContent = "book not merged yet";
  pos.title = "The merge writes the book's page order; run it to link the pages.";
}

setThreshold(threshold);
fit();
viewer.focus();
performance.mark("kz-ready");  // bench/review.py: when the page became usable
document.documentElement.setAttribute("data-ready", "1");
})();
"""


def _label_size(order: list[list[Char]]) -> int:
    """Font size of the characters written beside the boxes, in scan pixels: about half a
    character, smaller on a page whose columns leave less room between them (a label
    sits in the gap left of its column), never below a third of a character."""
    widths = [c.w for col in order for c in col]
    if not widths:
        return 12
    size = 0.55 * median(widths)
    gaps = [min(c.x for c in right) - max(c.x + c.w for c in left)
            for right, left in pairwise(order)]
    if gaps := [g for g in gaps if g > 0]:
        size = max(min(size, 0.9 * median(gaps)), median(widths) / 3)
    return max(8, round(size))


def review_page(result: PageResult, image: Image.Image, low_confidence: float) -> str:
    """HTML a person can open: the scan with each box, its character and confidence,
    the transcript, search, zoom, and links to the neighbouring pages of its book."""
    order = result.in_reading_order()
    label = _label_size(order)
    marks, columns, i = [], [], 0
    for col_no, col in enumerate(order):
        spans = []
        for row_no, c in enumerate(col):
            char = html.escape(code_to_char(c.code))
            low = " low" if c.confidence < low_confidence else ""
            marks.append(
                f'<g class="c{low}" data-i="{i}" data-code="{_attr(c.code)}" '
                f'data-conf="{c.confidence:.4f}" data-col="{col_no}" data-row="{row_no}">'
                f'<rect x="{c.x}" y="{c.y}" width="{c.w}" height="{c.h}"/>'
                f'<text x="{c.x + c.w + max(2, label // 6)}" y="{c.y + label}">{char}</text></g>'
            )
            spans.append(f'<span data-i="{i}" class="{low.strip()}">{char}</span>'
                         if low else f'<span data-i="{i}">{char}</span>')
            i += 1
        columns.append(f"<p>{''.join(spans)}</p>")
    confidences = [c.confidence for c in result.chars]
    mean_conf = f"{sum(confidences) / len(confidences):.2f}" if confidences else "–"
    low_count = sum(c < low_confidence for c in confidences)
    data = {"id": result.image_id, "book": result.book, "width": result.width,
            "height": result.height, "low_confidence": low_confidence}
    name, book = html.escape(result.image_id), html.escape(result.book)
    source = _source_line(result)
    where = f"book {book}" + (f" · {html.escape(source)}" if source else "")
    w, h = result.width, result.height
    return (
        '<!doctype html><html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{name} · review</title><style>{_PAGE_STYLE}</style></head><body>"
        "<header>"
        f'<div class="where"><h1>{name}</h1><small>{where}</small></div>'
        '<nav class="group pager" aria-label="pages of this book">'
        '<a id="prev" rel="prev" title="Previous page of the book (p)">‹ Prev</a>'
        '<span id="position" class="pos"></span>'
        '<a id="next" rel="next" title="Next page of the book (n)">Next ›</a>'
        '<a href="index.html" title="All pages, worst first">Index</a></nav>'
        '<div class="group" role="group" aria-label="zoom">'
        '<button id="zoom-out" type="button" title="Zoom out (-)">−</button>'
        '<output id="zoom-level">100%</output>'
        '<button id="zoom-in" type="button" title="Zoom in (+)">+</button>'
        '<button id="zoom-fit" type="button" title="Fit the page (0)">Fit</button>'
        '<button id="zoom-one" type="button" title="One scan pixel per screen pixel (1)">'
        "1:1</button></div>"
        '<div class="group"><input id="search" type="search" placeholder="Search 字 or U+5B57"'
        ' aria-label="Search characters" autocomplete="off">'
        '<output id="search-count" aria-live="polite"></output></div>'
        "</header><main>"
        '<div id="viewer" class="viewer" tabindex="0">'
        f'<div id="page" class="page" style="width:{w}px;height:{h}px">'
        f'<img id="scan" src="{thumbnail_data_uri(image)}" alt="scan of {name}" '
        f'width="{w}" height="{h}">'
        f'<svg id="boxes" viewBox="0 0 {w} {h}" preserveAspectRatio="none" '
        f'font-size="{label}">{"".join(marks)}</svg></div></div>'
        "<aside>"
        f'<section><h2>This page</h2><dl><dt>characters</dt><dd>{len(confidences)}</dd>'
        f"<dt>columns</dt><dd>{len(order)}</dd><dt>mean confidence</dt><dd>{mean_conf}</dd>"
        f"<dt>scan</dt><dd>{w} × {h} px</dd></dl></section>"
        '<section class="low-set"><h2><label for="threshold">Low confidence</label></h2>'
        '<div class="row">below <output id="threshold-value">'
        f'{low_confidence:.2f}</output><input id="threshold" type="range" min="0.5" max="1" '
        f'step="0.01" value="{low_confidence:.2f}"><b id="low-count">{low_count}</b></div>'
        '<p class="note">Highlighted in red. The default threshold is the setting '
        "<code>KZ_REVIEW_LOW_CONFIDENCE</code>; the index ranks pages by it. Confidence is "
        "the sigmoid of the margin between a box's two best classes (0.5 is a tie).</p>"
        "</section>"
        '<section><div class="legend"><span><i></i>box</span>'
        '<span><i class="low"></i>low confidence</span><span><i class="hit"></i>search hit'
        '</span></div><div class="legend show">show <label><input id="show-boxes" '
        'type="checkbox" checked>boxes</label><label><input id="show-text" type="checkbox" '
        "checked>characters</label></div>"
        '<p class="keys">Wheel or <kbd>+</kbd> <kbd>-</kbd> zoom, '
        "<kbd>0</kbd> fit, drag to pan, <kbd>/</kbd> search (<kbd>Enter</kbd> next hit), "
        "<kbd>p</kbd> <kbd>n</kbd> pages.</p></section>"
        '<section class="transcript" id="transcript" lang="ja"><h2>Transcript</h2>'
        f'<div class="text">{"".join(columns)}</div></section></aside></main>'
        '<div id="tip" class="tip" hidden><span class="ch"></span><span class="code"></span>'
        '<span class="conf">confidence <b></b></span><span class="place"></span></div>'
        f'<script type="application/json" id="page-data">{_script_json(data)}</script>'
        f'<script src="{_attr(book_script(result.book))}"></script>'
        f"<script>{_PAGE_SCRIPT}</script></body></html>"
    )


@dataclass(frozen=True)
class PageSummary:
    """What the index and a book's page order need of a page."""

    image_id: str
    book: str
    characters: int
    low: int
    name: str = ""  # the original file, when the page came from a PDF, TIFF or manifest
    page: int = 0  # its 1-based page in that file

    @classmethod
    def of(cls, result: PageResult, low_confidence: float) -> PageSummary:
        page = result.source.get("page")
        return cls(result.image_id, result.book, len(result.chars),
                   sum(c.confidence < low_confidence for c in result.chars),
                   str(result.source.get("name") or ""), page if isinstance(page, int) else 0)

    @property
    def share(self) -> float:
        return self.low / self.characters if self.characters else 0.0

    def order(self) -> tuple:
        """A book's page order: by file, page in it, then id with numbers as numbers
        (``Scan 2`` before ``Scan 10``)."""
        return (_natural(self.name), self.page, _natural(self.image_id))


def _natural(text: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", text) if p)


def books(pages: Iterable[PageSummary]) -> dict[str, list[PageSummary]]:
    """``{book: its pages in order}``, books by name."""
    grouped: dict[str, list[PageSummary]] = defaultdict(list)
    for p in pages:
        grouped[p.book].append(p)
    return {b: sorted(grouped[b], key=PageSummary.order) for b in sorted(grouped)}


def book_scripts(pages: Iterable[PageSummary]) -> dict[str, str]:
    """``{path under review/: script}``: each book's page order for its pages' links."""
    return {
        book_script(book): "window.KZ_REVIEW_BOOK = " + _script_json({
            "book": book,
            "pages": [{"id": p.image_id, "href": page_href(p.image_id),
                       "characters": p.characters, "low": p.low} for p in ordered],
        }) + ";\n"
        for book, ordered in books(pages).items()
    }


def _worst_first(p: PageSummary) -> tuple:
    return (-p.share, -p.characters, p.order())


_INDEX_STYLE = """
:root{--bar:#1f2430;--low:#e53935;--accent:#1565c0}
*{box-sizing:border-box}
body{margin:0;color:#1f2430;background:#eceae4;
font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans CJK JP","IPAexGothic",sans-serif}
header{padding:1rem 1.5rem;background:var(--bar);color:#e8ebf2}
header h1{margin:0 0 .2rem;font-size:1.3rem}
header p{margin:0;color:#9aa3b5}
header b{color:#ff8a80}
.tools{display:flex;flex-wrap:wrap;gap:.6rem 1.2rem;align-items:center;margin-top:.7rem}
.tools input{font:inherit;padding:.25rem .55rem;border-radius:5px;border:1px solid #4a5266;
width:16rem}
main{max-width:62rem;margin:0 auto;padding:1rem 1.5rem 3rem}
section{margin:1rem 0;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0002;
overflow:hidden}
section h2{display:flex;flex-wrap:wrap;justify-content:space-between;gap:.3rem 1rem;margin:0;
padding:.65rem 1rem;font-size:1.05rem;background:#f6f4ef;border-bottom:1px solid #e4e0d6}
section h2 small{font-weight:400;color:#6b7280;font-size:.85rem}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums;
table-layout:fixed}
th:nth-child(2){width:4rem}
th:nth-child(3){width:7.5rem}
th:nth-child(4){width:5rem}
th:nth-child(5){width:14rem}
td small{color:#6b7280;margin-left:.3rem}
th,td{padding:.35rem 1rem;text-align:right;border-bottom:1px solid #f0ede6}
th:first-child,td:first-child{text-align:left;word-break:break-all}
th{font-size:.8rem;font-weight:600;color:#6b7280;white-space:nowrap}
th button{font:inherit;color:inherit;background:none;border:0;padding:0;cursor:pointer}
th button:hover{color:var(--accent)}
th[aria-sort=descending] button::after{content:" ▼"}
th[aria-sort=ascending] button::after{content:" ▲"}
tbody tr:hover{background:#f7f5f0}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
.bar{display:flex;align-items:center;gap:.5rem;justify-content:flex-end}
.bar span{display:inline-block;width:7rem;height:.55rem;border-radius:3px;background:#eee;
overflow:hidden}
.bar span i{display:block;height:100%;background:var(--low)}
tr.none td{color:#9aa3b5}
"""

_INDEX_SCRIPT = r"""
(function () {
"use strict";
var tables = Array.prototype.slice.call(document.querySelectorAll("table.pages"));
var numeric = {order: true, characters: true, low: true, share: true};
function sortBy(key, descending) {
  tables.forEach(function (table) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.getAttribute("data-" + key), y = b.getAttribute("data-" + key), c;
      c = numeric[key] ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      if (descending) c = -c;
      return c || parseFloat(a.getAttribute("data-order")) -
        parseFloat(b.getAttribute("data-order"));
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (th.getAttribute("data-key") === key)
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    });
  });
}
document.addEventListener("click", function (e) {
  var th = e.target.closest("th[data-key]");
  if (!th) return;
  var key = th.getAttribute("data-key"), now = th.getAttribute("aria-sort");
  sortBy(key, now ? now === "ascending" : key !== "order" && key !== "id");
});
var filter = document.getElementById("filter");
filter.addEventListener("input", function () {
  var q = filter.value.trim().toLowerCase();
  document.querySelectorAll("section.book").forEach(function (s) {
    var shown = 0;
    Array.prototype.forEach.call(s.querySelectorAll("tbody tr"), function (r) {
      var on = !q || r.getAttribute("data-id").toLowerCase().indexOf(q) >= 0 ||
        s.getAttribute("data-book").toLowerCase().indexOf(q) >= 0;
      r.hidden = !on; shown += on;
    });
    s.hidden = !shown;
  });
});
document.documentElement.setAttribute("data-ready", "1");
})();
"""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def review_index(pages: Sequence[PageSummary], low_confidence: float) -> str:
    """The review pages by book, worst first: each book's pages sorted by their share of
    low-confidence characters (sortable by any column), books by their worst page."""
    grouped = books(pages)
    ranked = sorted(grouped, key=lambda b: min(_worst_first(p) for p in grouped[b]))
    sections = []
    for book in ranked:
        ordered = grouped[book]
        chars, low = sum(p.characters for p in ordered), sum(p.low for p in ordered)
        rows = []
        for place, p in sorted(enumerate(ordered), key=lambda t: _worst_first(t[1])):
            label = html.escape(p.image_id)
            if p.name:
                label += f' <small>{html.escape(p.name)}{f" p. {p.page}" if p.page else ""}</small>'
            rows.append(
                f'<tr data-id="{_attr(p.image_id)}" data-order="{place}" '
                f'data-characters="{p.characters}" data-low="{p.low}" '
                f'data-share="{p.share:.6f}"{" class=none" if not p.characters else ""}>'
                f'<td><a href="{_attr(page_href(p.image_id))}">{label}</a></td>'
                f"<td>{place + 1}</td><td>{p.characters}</td><td>{p.low}</td>"
                f'<td class="share"><span class="bar">{_pct(p.share)}<span>'
                f'<i style="width:{100 * p.share:.1f}%"></i></span></span></td></tr>'
            )
        share = low / chars if chars else 0.0
        sections.append(
            f'<section class="book" data-book="{_attr(book)}"><h2><span>{html.escape(book)}'
            f"</span><small>{_count(len(ordered), 'page')} · {chars} characters · {low} low "
            f"({_pct(share)})</small></h2>"
            '<table class="pages"><thead><tr>'
            '<th data-key="id"><button type="button">page</button></th>'
            '<th data-key="order"><button type="button">#</button></th>'
            '<th data-key="characters"><button type="button">characters</button></th>'
            '<th data-key="low"><button type="button">low</button></th>'
            '<th data-key="share" aria-sort="descending"><button type="button">'
            "low share</button></th>"
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></section>'
        )
    chars = sum(p.characters for p in pages)
    low = sum(p.low for p in pages)
    return (
        '<!doctype html><html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Review: {len(pages)} pages</title><style>{_INDEX_STYLE}</style></head><body>"
        f"<header><h1>Review: {_count(len(pages), 'page')} in {_count(len(grouped), 'book')}"
        "</h1>"
        f"<p>{chars} characters, <b>{low} below confidence {low_confidence:.2f}</b> "
        f"({_pct(low / chars if chars else 0.0)}). Books and pages are listed worst first: "
        "by their share of low-confidence characters. Click a column to sort.</p>"
        '<div class="tools"><input id="filter" type="search" placeholder="Filter by page or book"'
        ' aria-label="Filter pages"></div></header>'
        f'<main>{"".join(sections)}</main><script>{_INDEX_SCRIPT}</script></body></html>'
    )
