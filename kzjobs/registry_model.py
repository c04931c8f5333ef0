"""The ``kz-recognizer`` pyfunc, as MLflow "models from code".

MLflow executes this file when it logs or loads a version (``set_model`` below), so
never import it: :mod:`kzjobs.registry` passes its path. The weights are the version's
``bundle`` artifact (a folder with ``bundle.json``); nothing here is pickled. The
recognizer, with torch, is built lazily on the first ``predict``.

Input: a frame with ``image_id`` and ``image`` (a path or URI of the page image).
Output: ``image_id``, ``labels`` (submission format: ``U+XXXX x y`` centre points, in
reading order) and ``text`` (the page's transcript: a line per column, right to left).
The param ``adapt`` is ``kzjobs recognize --adapt``'s: each book's class shifts fitted on
its pages in the call (None, the default: as the blend was trained), so that a version
reads a batch as the recognize job reads a collection of the same pages.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
from mlflow.models import set_model


class KzRecognizerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from kzjobs.bundle import Bundle
        from kzjobs.store import open_store

        self.root = open_store(context.artifacts["bundle"])
        self.bundle = Bundle.load(self.root)  # fail at load time on a broken bundle
        if missing := self.bundle.missing(self.root):
            raise FileNotFoundError(f"bundle {self.root.uri} lacks {missing}")
        self._recognizer = None

    def recognizer(self, adapting: bool) -> Any:
        if self._recognizer is None:
            from kzjobs.recognize.recognizer import Recognizer

            self._recognizer = Recognizer.from_bundle(self.bundle, self.root)
        return self._recognizer.without_book_shifts() if adapting else self._recognizer

    # No type hints here: MLflow would read them as a schema; the signature is logged instead.
    def predict(self, context, model_input, params=None):
        import pandas as pd

        from kzjobs.data.format import format_points
        from kzjobs.images import open_image
        from kzjobs.recognize import PAGES_PER_BATCH, adapt
        from kzjobs.recognize.recognizer import bundle_profile, page_workers
        from kzjobs.store import read_uri

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


set_model(KzRecognizerModel())
