"""The method's steps between the stages: folds, prediction files, blend, per-book shifts,
pseudolabels, OOF, metric and figures."""
