"""The detector: a torchvision Faster R-CNN with an FPN backbone and two classes.

Trained from scratch (trainable BatchNorm, no ImageNet weights); weights a user
supplies by path are loaded with ``torch.load(weights_only=True)``. Nothing is
downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from kzjobs.detect.config import DetectConfig

log = logging.getLogger(__name__)

NUM_CLASSES = 2  # background and character
CHARACTER = 1  # the label of a character box
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


class PageScaleTransform(GeneralizedRCNNTransform):
    """Normalise and batch, but never resize: the dataset sets the page scale.

    torchvision's transform rescales every image to ``min_size``/``max_size``; no
    fixed pair of those leaves pages of varied shape untouched, so resizing is
    switched off here instead (as the seed did).
    """

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target


def _freeze(trunk: nn.Module, trainable: list[str]) -> None:
    for name, param in trunk.named_parameters():
        if not name.startswith(tuple(trainable)):
            param.requires_grad_(False)


def _backbone(config: DetectConfig) -> tuple[nn.Module, int]:
    """The FPN backbone and its number of feature maps.

    torchvision's ``resnet_fpn_backbone``/``mobilenet_backbone`` fix the FPN width at
    256; the FPN, the RPN head and the box head scale with that width (quadratically for
    the convolutions), and a narrow FPN is what makes CPU profiles affordable. So the
    trunk is wrapped in ``BackboneWithFPN`` here, with the same layer choice and
    freezing rules as torchvision's extractors (the tests compare the two).
    """
    returned = list(config.returned_layers) if config.returned_layers else None
    if config.backbone == "mobilenet_v3_large":
        features = mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d).features
        # C0..C5: the first block, each block that halves the resolution, the last block
        stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
        stages.append(len(features) - 1)
        returned = returned or [len(stages) - 2, len(stages) - 1]
        trainable = len(stages) if config.trainable_layers is None else config.trainable_layers
        first = len(features) if trainable == 0 else stages[len(stages) - trainable]
        for block in features[:first]:
            block.requires_grad_(False)
        trunk: nn.Module = features
        return_layers = {str(stages[k]): str(v) for v, k in enumerate(returned)}
        in_channels = [features[stages[k]].out_channels for k in returned]
    else:
        trunk = getattr(resnet, config.backbone)(weights=None, norm_layer=nn.BatchNorm2d)
        returned = returned or [1, 2, 3, 4]
        trainable = 5 if config.trainable_layers is None else config.trainable_layers
        layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
        _freeze(trunk, layers + (["bn1"] if trainable == 5 else []))
        return_layers = {f"layer{k}": str(v) for v, k in enumerate(returned)}
        stage2 = trunk.inplanes // 8  # 64 for resnet18/34, 256 for the bottleneck ones
        in_channels = [stage2 * 2 ** (k - 1) for k in returned]
    backbone = BackboneWithFPN(trunk, return_layers, in_channels, config.fpn_channels,
                               extra_blocks=LastLevelMaxPool())
    return backbone, len(returned) + 1  # +1: the max-pooled extra level


def _anchors(config: DetectConfig, levels: int) -> AnchorGenerator:
    sizes = config.anchor_sizes
    per_level = (
        tuple((s,) for s in sizes) if len(sizes) == levels else (tuple(sizes),) * levels
    )
    return AnchorGenerator(sizes=per_level, aspect_ratios=(tuple(config.anchor_ratios),) * levels)


def build_detector(config: DetectConfig, *, load_weights: bool = True) -> FasterRCNN:
    """A Faster R-CNN for ``config``; user weights (by path) are loaded when given."""
    backbone, levels = _backbone(config)
    if load_weights and config.backbone_weights:
        load_backbone_weights(backbone, config.backbone_weights)
    roi = 7  # MultiScaleRoIAlign's output size in FasterRCNN
    model = FasterRCNN(
        backbone,
        box_head=TwoMLPHead(config.fpn_channels * roi * roi, config.box_head_size),
        box_predictor=FastRCNNPredictor(config.box_head_size, NUM_CLASSES),
        rpn_anchor_generator=_anchors(config, levels),
        rpn_pre_nms_top_n_test=config.proposals_test,
        rpn_post_nms_top_n_test=config.proposals_test,
        box_batch_size_per_image=config.roi_batch_size,
        box_score_thresh=config.score_threshold,
        box_nms_thresh=config.nms_iou,
        box_detections_per_img=config.detections_per_image,
    )
    model.transform = PageScaleTransform(
        min_size=config.page_size, max_size=config.page_size,
        image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
    )
    if load_weights and config.weights:
        model.load_state_dict(_state_dict(read_weights(config.weights)))
    return model


def set_inference_options(model: FasterRCNN, config: DetectConfig) -> None:
    """Apply a profile's inference knobs to a model built from another config."""
    model.roi_heads.score_thresh = config.score_threshold
    model.roi_heads.nms_thresh = config.nms_iou
    model.roi_heads.detections_per_img = config.detections_per_image
    model.rpn._pre_nms_top_n["testing"] = config.proposals_test
    model.rpn._post_nms_top_n["testing"] = config.proposals_test


def load_detector(checkpoint: dict[str, Any], inference: DetectConfig | None = None,
                  device: torch.device | None = None) -> tuple[FasterRCNN, DetectConfig]:
    """The detector of a ``model.pt``/``checkpoint.pt`` dict, ready for inference on
    ``device`` (default the CPU): eval mode, channels_last (``kzjobs.core.device.for_inference``).

    The architecture comes from the checkpoint's config; ``inference`` (e.g. the
    profile's) may override the inference knobs (thresholds, detections per page, the
    page size read). A page size outside the scales the detector trained on is warned of.
    """
    from kzjobs.core.device import for_inference

    config = DetectConfig.model_validate(checkpoint["config"])
    model = build_detector(config, load_weights=False)
    model.load_state_dict(checkpoint["model"])
    if inference is not None:
        set_inference_options(model, inference)
        low, high = config.scale_range
        if not low <= inference.test_page_size / config.page_size <= high:
            log.warning("reading pages at %d px: the detector trained on %d px pages scaled "
                        "%.2f-%.2f", inference.test_page_size, config.page_size, low, high)
    return for_inference(model, device or torch.device("cpu")), config


def read_weights(path: str | Path) -> Any:
    """A state_dict or checkpoint dict from a weights reference (a local file, a shipped
    name, a registered version or a store key: :mod:`kzjobs.pretrain.weights`), its
    sha256 checked when one is written beside it, loaded without pickled code."""
    from kzjobs.pretrain.weights import read_weights as read

    return read(path)


def _state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or a checkpoint dict holding one under ``model``."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    if isinstance(obj, dict):
        return obj
    raise ValueError(f"expected a state_dict, got {type(obj).__name__}")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a classification trunk's state_dict (e.g. ``resnet50`` or
    ``mobilenet_v3_large`` from torchvision, or a ``kzjobs pretrain`` classifier) into
    the FPN backbone's body.

    Keys of a classifier head (``fc.*``, ``classifier.*``, ``head.*``) have no place in a
    detector and are ignored. A trunk that stops before a stage (the pretrained ROI
    classifier ends at layer3) leaves that stage as built; any other mismatch is an error.
    """
    from kzjobs.pretrain.weights import state_dict_of

    state = state_dict_of(read_weights(path))
    body = backbone.body
    prefix = "features."  # mobilenet trunks keep their layers under ``features``
    state = {k.removeprefix(prefix): v for k, v in state.items()}
    result = body.load_state_dict(state, strict=False)
    stages = {k.split(".")[0] for k in state}
    absent = [k for k in result.missing_keys if k.split(".")[0] not in stages]
    missing = [k for k in result.missing_keys
               if not k.endswith("num_batches_tracked") and k not in absent]
    unexpected = [k for k in result.unexpected_keys
                  if not k.startswith(("fc.", "classifier.", "head."))]
    loaded = len(state) - len(result.unexpected_keys)
    if missing or unexpected or not loaded:
        raise ValueError(
            f"backbone weights {path} do not fit: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    if absent:
        log.info("backbone stages %s not in %s: left as built",
                 sorted({k.split(".")[0] for k in absent}), path)
    log.info("loaded %d backbone tensors from %s", loaded, path)
