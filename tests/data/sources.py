"""Inputs as libraries and archives make them, built here, and a IIIF server on 127.0.0.1.

:class:`IIIFServer` is a real HTTP server (``http.server`` in a thread) that serves
Presentation 2 and 3 manifests and an Image API for their canvases; a path can be made
to fail (404), to be slow (sleep past a client's timeout), to fail once (503) or to
redirect. It records every request it gets.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageDraw

from tests.conftest import free_port


def page(size: tuple[int, int] = (240, 360), shade: int = 40, mode: str = "RGB") -> Image.Image:
    """A small page: paper and a few strokes of ``shade``."""
    img = Image.new("RGB", size, (236, 226, 200))
    draw = ImageDraw.Draw(img)
    for i in range(3):
        x = 20 + i * (size[0] - 40) // 3
        draw.rectangle((x, 20, x + 12, size[1] - 20), fill=(shade, shade, shade))
    return img.convert(mode)


def encoded(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    """``img`` saved as ``fmt``. Copies are saved: Pillow leaves a writer's settings on
    appended images, and the next writer to get them would trip on them."""
    if "append_images" in kwargs:
        kwargs["append_images"] = [i.copy() for i in kwargs["append_images"]]
    buf = io.BytesIO()
    img.copy().save(buf, fmt, **kwargs)
    return buf.getvalue()


def pdf(pages: int, size: tuple[int, int] = (240, 360), resolution: float = 72.0) -> bytes:
    """A PDF whose page i is a page image of shade 20 * i (Pillow writes one image a page)."""
    imgs = [page(size, shade=20 * i) for i in range(pages)]
    return encoded(imgs[0], "PDF", save_all=True, append_images=imgs[1:],
                   resolution=resolution)


def tiff(frames: list[Image.Image]) -> bytes:
    return encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def manifest_v3(base: str, ident: str, canvases: list[tuple[str, int, int]]) -> dict:
    return {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": f"{base}/{ident}/manifest.json", "type": "Manifest", "label": {"ja": [ident]},
        "items": [{
            "id": f"{base}/{ident}/canvas/{n}", "type": "Canvas", "width": w, "height": h,
            "items": [{"id": f"{base}/{ident}/page/{n}", "type": "AnnotationPage", "items": [{
                "id": f"{base}/{ident}/anno/{n}", "type": "Annotation", "motivation": "painting",
                "target": f"{base}/{ident}/canvas/{n}",
                "body": {"id": f"{base}/iiif/{image}/full/max/0/default.jpg", "type": "Image",
                         "format": "image/jpeg", "width": w, "height": h,
                         "service": [{"id": f"{base}/iiif/{image}", "type": "ImageService3",
                                      "profile": "level1"}]}}]}]}
            for n, (image, w, h) in enumerate(canvases, start=1)],
    }


def manifest_v2(base: str, ident: str, canvases: list[tuple[str, int, int]]) -> dict:
    return {
        "@context": "http://iiif.io/api/presentation/2/context.json",
        "@id": f"{base}/{ident}/manifest.json", "@type": "sc:Manifest", "label": ident,
        "sequences": [{"@type": "sc:Sequence", "canvases": [{
            "@id": f"{base}/{ident}/canvas/{n}", "@type": "sc:Canvas", "width": w, "height": h,
            "images": [{"@type": "oa:Annotation", "motivation": "sc:painting",
                        "on": f"{base}/{ident}/canvas/{n}",
                        "resource": {"@id": f"{base}/iiif/{image}/full/full/0/default.jpg",
                                     "@type": "dctypes:Image", "width": w, "height": h,
                                     "service": {"@context": "http://iiif.io/api/image/2/context.json",
                                                 "@id": f"{base}/iiif/{image}",
                                                 "profile": "http://iiif.io/api/image/2/level1.json"}}}]}
            for n, (image, w, h) in enumerate(canvases, start=1)]}],
    }


class IIIFServer:
    """Manifests at ``/<id>/manifest.json``, images at ``/iiif/<image>/...`` (any region
    and size: the image is scaled to the width asked, ``w,`` or ``,h``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.manifests: dict[str, bytes] = {}
        self.images: dict[str, Image.Image] = {}
        self.slow: set[str] = set()  # image names that answer after `delay` seconds
        self.delay = 3.0
        self.fail_once: set[str] = set()  # image names that answer 503 the first time
        self.redirects: dict[str, str] = {}  # path -> Location
        self.requests: list[tuple[str, float]] = []  # (path, monotonic time)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append((self.path, time.monotonic()))
                status, body, kind = server.answer(self.path)
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", body.decode())
                    body = b""
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)  # a client that timed out is gone

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str) -> tuple[int, bytes, str]:
        if path in self.redirects:
            return 302, self.redirects[path].encode(), "text/plain"
        parts = path.strip("/").split("/")
        if parts[-1] == "manifest.json" and "/".join(parts[:-1]) in self.manifests:
            return 200, self.manifests["/".join(parts[:-1])], "application/ld+json"
        if len(parts) == 6 and parts[0] == "iiif" and parts[1] in self.images:
            name, size = parts[1], parts[3]
            if name in self.slow:
                time.sleep(self.delay)
            if name in self.fail_once:
                self.fail_once.discard(name)
                return 503, b"busy", "text/plain"
            img = self.images[name]
            if size not in ("max", "full"):
                w, _, h = size.partition(",")
                scale = int(w) / img.width if w else int(h) / img.height
                img = img.resize((round(img.width * scale), round(img.height * scale)))
            return 200, encoded(img, "JPEG"), "image/jpeg"
        return 404, b"not found", "text/plain"

    def add_manifest(self, ident: str, version: int, images: dict[str, Image.Image]) -> str:
        """A manifest of one canvas per image; its URL."""
        self.images.update(images)
        canvases = [(name, img.width, img.height) for name, img in images.items()]
        make = manifest_v3 if version == 3 else manifest_v2
        self.manifests[ident] = json.dumps(make(self.base, ident, canvases)).encode()
        return f"{self.base}/{ident}/manifest.json"

    def __enter__(self) -> IIIFServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
