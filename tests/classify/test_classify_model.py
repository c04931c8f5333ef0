"""The ROI classifier's architecture: trunk to layer3, roi_align on layer2+3, the head."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from kzjobs.classify.model import RoIClassifier, build_model
from kzjobs.core.checkpoint import checkpoint_bytes, load_checkpoint


def test_resnet50_wide_trunk_gives_13824_features_and_the_seed_head():
    model = RoIClassifier("resnet50", n_classes=11)
    assert model.n_features == 13_824  # (512 + 1024) channels x 3 x 3
    assert not hasattr(model, "layer4") and not hasattr(model, "fc")
    kinds = [type(m) for m in model.head]
    assert kinds == [nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.BatchNorm1d, nn.Linear]
    assert model.head[1].out_features == 1024 and model.head[-1].out_features == 11
    assert model.head[0].p == model.head[3].p == 0.5


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown classifier kind"):
        RoIClassifier("vgg16", n_classes=3)


def test_one_row_of_logits_per_box_across_images():
    model = RoIClassifier("resnet18", n_classes=7).eval()
    images = torch.rand(2, 3, 128, 96)
    boxes = [torch.tensor([[4.0, 4, 40, 40], [50, 60, 90, 120]]), torch.tensor([[0.0, 0, 96, 128]])]
    assert model(images, boxes).shape == (3, 7)
    assert model(images, [boxes[0], torch.zeros(0, 4)]).shape == (2, 7)


def test_frozen_parts_have_no_grad_and_keep_batchnorm_in_eval_mode():
    model = RoIClassifier("resnet18", n_classes=5).train()
    for name in ("conv1", "bn1", "layer1"):
        part = getattr(model, name)
        assert all(not p.requires_grad for p in part.parameters())
        assert not any(m.training for m in part.modules())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert model.layer3.training and model.head.training
    before = model.bn1.running_mean.clone()
    images, boxes = torch.rand(2, 3, 96, 96) * 5, [torch.tensor([[8.0, 8, 60, 60]])] * 2
    model(images, boxes).sum().backward()
    assert torch.equal(model.bn1.running_mean, before)  # eval-mode BatchNorm does not update
    assert model.layer1[0].conv1.weight.grad is None
    assert model.layer2[0].conv1.weight.grad is not None


def test_roi_align_scale_follows_the_feature_map():
    """A box reads the same features wherever its content is, so the scale is right."""
    torch.manual_seed(0)
    model = RoIClassifier("resnet18", n_classes=3).eval()
    content = torch.rand(1, 3, 64, 64)
    # A canvas large enough that layer3's receptive field never reaches its border.
    a = torch.ones(1, 3, 640, 640)
    b = torch.ones(1, 3, 640, 640)
    a[..., 256:320, 256:320] = content
    b[..., 320:384, 352:416] = content  # moved by multiples of the layer3 stride (16)
    with torch.no_grad():
        fa = model.features(a, [torch.tensor([[256.0, 256, 320, 320]])])
        fb = model.features(b, [torch.tensor([[352.0, 320, 416, 384]])])
        wrong = model.features(b, [torch.tensor([[256.0, 256, 320, 320]])])
    assert torch.allclose(fa, fb, atol=1e-4 * fa.abs().max())
    assert not torch.allclose(fa, wrong, atol=1e-2 * fa.abs().max())


def test_a_box_reads_the_same_features_on_a_page_of_any_width():
    """Widening the page to the right leaves the features under a box where they were:
    the ROI scale is the stride's, not the ratio of the map's width to a width that is
    not a multiple of the stride."""
    torch.manual_seed(0)
    model = RoIClassifier("resnet18", n_classes=3).eval()
    page = torch.ones(1, 3, 512, 1400)
    page[..., 200:300, 800:900] = torch.rand(3, 100, 100)
    box = [torch.tensor([[800.0, 200, 900, 300]])]
    with torch.no_grad():
        narrow = model.features(page[..., :1100], box)  # 69 cells of 16 px at layer3
        wide = model.features(page, box)  # 88 cells
    assert torch.allclose(narrow, wide, atol=1e-4 * wide.abs().max())


def test_user_weights_load_into_the_trunk(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = RoIClassifier("resnet18", n_classes=4)
    model.load_trunk(str(path))
    assert torch.equal(model.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, reference.bn1.running_var)

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit a resnet18 trunk"):
        model.load_trunk(str(path))


def test_checkpoint_round_trip_is_weights_only():
    args = {"kind": "resnet18", "n_classes": 3, "roi_size": 3, "hidden": 32, "dropout": 0.5,
            "frozen": ["conv1", "bn1", "layer1"]}
    model = build_model(args).eval()
    data = checkpoint_bytes({"model": model.state_dict(), "model_args": args,
                            "vocabulary": ["U+3042", "U+3044", "seg_fp"]})
    ckpt = load_checkpoint(data)  # torch.load(weights_only=True) inside
    again = build_model(ckpt["model_args"]).eval()
    again.load_state_dict(ckpt["model"])
    images, boxes = torch.rand(1, 3, 64, 64), [torch.tensor([[1.0, 1, 30, 30]])]
    with torch.no_grad():
        assert torch.equal(model(images, boxes), again(images, boxes))


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.05), ("adamw", 0.003)])
def test_each_optimizer_of_the_profile_learns_patterns_and_leaves_frozen_parts(optimizer, lr):
    from kzjobs.classify.config import ClassifyConfig
    from kzjobs.classify.engine import make_optimizer

    torch.manual_seed(0)
    cfg = ClassifyConfig(optimizer=optimizer, lr=lr, weight_decay=0.01)
    model = RoIClassifier("resnet18", n_classes=3, dropout=0.0)
    # Three box contents: blank paper, a vertical stroke, a horizontal stroke.
    images = torch.ones(2, 3, 96, 96)
    boxes, targets = [], []
    for i in range(2):
        mine = []
        for j, kind in enumerate((0, 1, 2, 1, 2, 0)):
            x, y = 16 * j, 8 + 40 * i
            if kind == 1:
                images[i, :, y:y + 16, x + 6:x + 10] = 0
            elif kind == 2:
                images[i, :, y + 6:y + 10, x:x + 16] = 0
            mine.append([x, y, x + 16, y + 16])
            targets.append(kind)
        boxes.append(torch.tensor(mine, dtype=torch.float32))
    targets = torch.tensor(targets)
    frozen = model.conv1.weight.detach().clone()
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    assert type(opt).__name__ == {"sgd": "SGD", "adamw": "AdamW"}[optimizer]
    model.train()
    losses = []
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(images, boxes), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert (model.eval()(images, boxes).argmax(1) == targets).all()
    assert torch.equal(model.conv1.weight, frozen)
