"""The method's steps between the stages: folds, blend, pseudolabels, OOF, metric."""
