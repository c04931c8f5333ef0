"""Stage 2: ROI classifiers that name each frozen box, with a ``seg_fp`` class."""
