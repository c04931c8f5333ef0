"""Data validation with Great Expectations: annotations, incoming batches, predictions.

``facts`` turns each item into rows of plain facts (Python does the decoding and the
parsing), ``suites`` holds one GX suite per guarded thing as data, ``expectations``
runs them, ``job.ValidateJob`` writes the report and the quarantine, ``cli`` is
``kzjobs validate``, and ``corpus`` writes bad input for tests. Limits live in
``config.ValidateConfig`` (the profile's ``validate`` section).
"""
