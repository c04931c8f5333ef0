"""The detector's shape: backbones by name, two classes, character anchors, no resize."""

from __future__ import annotations

import pytest
import torch

from kzjobs.detect.config import DetectConfig


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "resnet101",
                                      "resnet152", "mobilenet_v3_large"])
def test_every_backbone_builds_a_two_class_detector(backbone):
    from kzjobs.detect.model import build_detector

    config = DetectConfig(backbone=backbone, fpn_channels=32, box_head_size=64)
    model = build_detector(config).eval()
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.detections_per_img >= 1000
    assert model.roi_heads.nms_thresh == 0.25 and model.roi_heads.score_thresh == 0.5
    # trained from scratch: every layer learns, and BatchNorm is a real (not frozen) one
    assert all(p.requires_grad for p in model.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())
    with torch.no_grad():
        out = model([torch.rand(3, 96, 64)])
    assert set(out[0]) == {"boxes", "labels", "scores"}


def test_anchor_sizes_are_one_per_level_or_all_on_every_level():
    from kzjobs.detect.model import build_detector

    model = build_detector(DetectConfig(fpn_channels=32, box_head_size=64))
    assert model.rpn.anchor_generator.sizes == ((12,), (24,), (32,), (64,), (96,))
    assert model.rpn.anchor_generator.aspect_ratios[0] == (0.5, 1.0, 2.0)
    mobile = build_detector(DetectConfig(backbone="mobilenet_v3_large", returned_layers=(3, 5),
                                         fpn_channels=32, box_head_size=64))
    assert mobile.rpn.anchor_generator.sizes == ((12, 24, 32, 64, 96),) * 3


def test_too_few_detections_per_image_is_refused():
    with pytest.raises(ValueError, match="detections_per_image"):
        DetectConfig(detections_per_image=500)
    with pytest.raises(ValueError, match="proposals_test"):
        DetectConfig(detections_per_image=1500, proposals_test=1000)


def test_a_test_scale_outside_the_trained_scales_is_refused():
    assert DetectConfig(scale_range=(0.7, 1.5), test_scale=0.75).test_page_size == 768
    with pytest.raises(ValueError, match="never saw characters at that size"):
        DetectConfig(scale_range=(0.8, 1.2), test_scale=0.75)


@pytest.mark.parametrize("training", [True, False])
def test_the_model_does_not_rescale_pages(training):
    """The dataset sets the page scale: torchvision's transform must keep every size."""
    from kzjobs.detect.model import build_detector

    model = build_detector(DetectConfig(page_size=64, fpn_channels=32, box_head_size=64))
    model.train(training)
    images = [torch.rand(3, 300, 500), torch.rand(3, 333, 211)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]),
                "labels": torch.tensor([1])} for _ in images]
    batch, out_targets = model.transform(images, targets if training else None)
    assert batch.image_sizes == [(300, 500), (333, 211)]
    if training:
        assert torch.equal(out_targets[0]["boxes"], targets[0]["boxes"])
    # postprocessing maps boxes with the identity
    detections = [{"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "scores": torch.ones(1),
                   "labels": torch.ones(1, dtype=torch.int64)}]
    back = model.transform.postprocess(detections, [(300, 500)], [(300, 500)])
    assert back[0]["boxes"].tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_user_weights_load_by_path(tmp_path):
    from torchvision.models import resnet18, resnet34

    from kzjobs.detect.model import build_detector

    small = {"fpn_channels": 32, "box_head_size": 64}
    trained = build_detector(DetectConfig(**small))
    torch.save({"model": trained.state_dict()}, tmp_path / "detector.pt")
    loaded = build_detector(DetectConfig(weights=str(tmp_path / "detector.pt"), **small))
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name

    trunk = resnet18()
    torch.save(trunk.state_dict(), tmp_path / "resnet18.pt")
    model = build_detector(DetectConfig(backbone_weights=str(tmp_path / "resnet18.pt"), **small))
    assert torch.equal(model.backbone.body.layer3[0].conv1.weight, trunk.layer3[0].conv1.weight)

    torch.save(resnet34().state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(ValueError, match="do not fit"):
        build_detector(DetectConfig(backbone_weights=str(tmp_path / "resnet34.pt"), **small))


@pytest.mark.parametrize(("backbone", "trainable"), [("resnet18", 5), ("resnet18", 3),
                                                     ("mobilenet_v3_large", 6),
                                                     ("mobilenet_v3_large", 2)])
def test_backbone_matches_torchvision_at_its_fpn_width(backbone, trainable):
    """The width-configurable backbone is torchvision's own at width 256."""
    from torch import nn
    from torchvision.models.detection.backbone_utils import (
        mobilenet_backbone,
        resnet_fpn_backbone,
    )

    from kzjobs.detect.model import _backbone

    mine, _ = _backbone(DetectConfig(backbone=backbone, trainable_layers=trainable))
    if backbone.startswith("resnet"):
        ref = resnet_fpn_backbone(backbone_name=backbone, weights=None,
                                  norm_layer=nn.BatchNorm2d, trainable_layers=trainable)
    else:
        ref = mobilenet_backbone(backbone_name=backbone, weights=None, fpn=True,
                                 norm_layer=nn.BatchNorm2d, trainable_layers=trainable)
    shapes = {k: v.shape for k, v in ref.state_dict().items()}
    assert {k: v.shape for k, v in mine.state_dict().items()} == shapes
    trainable_names = {n for n, p in ref.named_parameters() if p.requires_grad}
    assert {n for n, p in mine.named_parameters() if p.requires_grad} == trainable_names


def test_reading_pages_at_a_size_the_detector_never_trained_on_is_warned_of(caplog):
    from kzjobs.detect.model import build_detector, load_detector

    trained = DetectConfig(fpn_channels=32, box_head_size=64, page_size=256)
    ckpt = {"config": trained.model_dump(mode="json"),
            "model": build_detector(trained, load_weights=False).state_dict()}
    load_detector(ckpt, trained.model_copy(update={"page_size": 280}))  # 1.09: trained
    assert "never" not in caplog.text and "reading pages" not in caplog.text
    load_detector(ckpt, trained.model_copy(update={"page_size": 512}))  # 2.0: not
    assert "reading pages at 512 px: the detector trained on 256 px pages" in caplog.text
