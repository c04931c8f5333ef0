"""The ``kz-recognizer`` pyfunc: MLflow's ``loader_module`` flavor, from the installed kzjobs.

A registered version holds no code: its ``MLmodel`` names this module
(``loader_module: kzjobs.release.registry_model``) and its data is the bundle folder (weight
files and a manifest with their sha256; nothing is pickled). MLflow imports this module
from the installed package and calls :func:`_load_pyfunc` with the bundle folder, so a
version always runs the code of the kzjobs that loads it, never code stored beside the
weights. (MLflow's "models from code" would execute a Python file kept in the artifact:
whoever can write the artifact store could run code in every job that loads a version.)
:func:`kzjobs.release.registry.load_model` checks ``MLmodel`` before MLflow reads it.

Input: a frame with ``image_id`` and ``image`` (a path or URI of the page image).
Output: ``image_id``, ``labels`` (submission format: ``U+XXXX x y`` centre points, in
reading order) and ``text`` (the page's transcript: a line per column, right to left).
The param ``adapt`` is ``kzjobs recognize --adapt``'s: each book's class shifts fitted on
its pages in the call (None, the default: as the blend was trained), so that a version
reads a batch as the recognize job reads a collection of the same pages.
"""

from __future__ import annotations

from typing import Any


class KzRecognizerModel:
    """A loaded version: its bundle (checked against its hashes); the recognizer, with
    torch, is built lazily on the first ``predict``."""

    def __init__(self, bundle_dir: str) -> None:
        from kzjobs.core.store import open_store
        from kzjobs.release.bundle import Bundle

        self.root = open_store(bundle_dir)
        self.bundle = Bundle.load(self.root)  # every file checked against its sha256
        self._recognizer: Any = None

    def recognizer(self, adapting: bool) -> Any:
        if self._recognizer is None:
            from kzjobs.recognize.recognizer import Recognizer

            self._recognizer = Recognizer.from_bundle(self.bundle, self.root)
        return self._recognizer.without_book_shifts() if adapting else self._recognizer

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        from kzjobs.core.images import open_image
        from kzjobs.core.store import read_uri
        from kzjobs.data.format import format_points
        from kzjobs.recognize import PAGES_PER_BATCH, adapt
        from kzjobs.recognize.recognizer import bundle_profile, page_workers

        def pages():  # read a batch at a time
            return ((str(image_id), open_image(read_uri(str(image))))
                    for image_id, image in zip(model_input["image_id"], model_input["image"],
                                               strict=True))

        adapting = adapt.adapting(bundle_profile(self.bundle), (params or {}).get("adapt"))
        recognizer = self.recognizer(adapting)
        workers = page_workers(recognizer.device)  # as the job: pages side by side
        if adapting:
            adapt.check_shares(recognizer, self.root.uri, "params={'adapt': False}")
            stream = adapt.recognize_in_memory(recognizer, pages, PAGES_PER_BATCH, workers)
        else:
            stream = recognizer.recognize_stream(pages(), PAGES_PER_BATCH, workers)
        results = [result for result, _ in stream]
        return pd.DataFrame({"image_id": [r.image_id for r in results],
                             "labels": [format_points(r.points()) for r in results],
                             "text": [r.transcript() for r in results]})


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> KzRecognizerModel:
    """MLflow's entry point for a ``loader_module`` model: ``data_path`` is the bundle."""
    return KzRecognizerModel(data_path)
