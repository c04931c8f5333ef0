"""Pretraining from the project's own data: the offline stand-in for ImageNet weights.

``kzjobs pretrain`` trains a ROI classifier (trunk and head) on small rendered crops of
every code point of the vocabulary in every training font; the classifiers start from
its weights, and the detector's backbone from its trunk (``kzjobs.pretrain.weights``).
"""
