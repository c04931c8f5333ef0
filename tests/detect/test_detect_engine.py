"""OOF labels by IoU, and the warm-up + cosine schedule."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from kzjobs.data.format import SEG_FP, Box
from kzjobs.detect.config import DetectConfig


def test_each_box_takes_the_code_of_its_best_ground_truth_at_iou_half():
    from kzjobs.detect.engine import Detection, label_by_iou

    truth = [Box("U+3042", 0, 0, 10, 10), Box("U+3044", 20, 0, 10, 10)]
    dets = [
        Detection(0, 0, 10, 10, 0.9),   # exact: U+3042
        Detection(22, 0, 10, 10, 0.9),  # IoU 80/120 with U+3044
        Detection(4, 0, 10, 10, 0.9),   # IoU 60/140 < 0.5 with U+3042: seg_fp
        Detection(50, 50, 5, 5, 0.9),   # nothing there: seg_fp
        Detection(12, 0, 15, 10, 0.9),  # overlaps both; best is U+3044 (IoU 70/150 < 0.5)
        Detection(18, 0, 11, 10, 0.9),  # IoU 90/120 with U+3044, none with U+3042
        Detection(0, 0, 20, 10, 0.9),   # IoU 100/200 = 0.5 exactly: kept
    ]
    labelled = label_by_iou(dets, truth)
    assert [b.code for b in labelled] == [
        "U+3042", "U+3044", SEG_FP, SEG_FP, SEG_FP, "U+3044", "U+3042"]
    assert [(b.x, b.y, b.w, b.h) for b in labelled] == [(d.x, d.y, d.w, d.h) for d in dets]
    assert [b.code for b in label_by_iou(dets[:2], [])] == [SEG_FP, SEG_FP]
    assert label_by_iou([], truth) == []


def test_learning_rate_warms_up_then_decays_and_resumes():
    from kzjobs.detect.engine import lr_scheduler

    config = DetectConfig(lr=0.1, warmup_iters=10)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=config.lr, momentum=0.9)
    scheduler = lr_scheduler(optimizer, config, total_iters=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < 0.001 and lrs[5] < lrs[9] < lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[-1] < 0.001

    # optimizer + scheduler state survive a weights_only round trip: the run continues
    def fresh():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
        return opt, lr_scheduler(opt, config, total_iters=100)

    opt, sched = fresh()
    for _ in range(40):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    opt, sched = fresh()
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(60):
        resumed.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert resumed == pytest.approx(lrs[40:])


@pytest.mark.parametrize(("bf16", "test_scale"), [(False, 1.0), (False, 0.75), (True, 1.0)])
def test_detect_page_is_the_model_forward_mapped_back_to_the_page(monkeypatch, bf16, test_scale):
    """detect_page splits GeneralizedRCNN's forward (a bf16 backbone where the CPU has
    native bf16): in fp32 it finds exactly the model's own boxes on the page read at the test
    scale, mapped back to page pixels; with a bf16 backbone, boxes near the model's own."""
    import numpy as np
    from PIL import Image

    import kzjobs.core.device
    from kzjobs.detect.dataset import scale_page, to_tensor
    from kzjobs.detect.engine import detect_page
    from kzjobs.detect.model import build_detector

    if bf16 and not kzjobs.core.device.cpu_has_bf16():
        pytest.skip("this CPU does not do bf16 in hardware: it is never used here")
    monkeypatch.setattr(kzjobs.core.device, "cpu_has_bf16", lambda: bf16)
    config = DetectConfig(backbone="resnet18", fpn_channels=32, page_size=256,
                          score_threshold=0.0, scale_range=(0.5, 1.5), test_scale=test_scale)
    torch.manual_seed(0)
    model = build_detector(config, load_weights=False).eval()
    page = Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 300, 3), np.uint8))
    cpu = torch.device("cpu")
    found = detect_page(model, page, config, cpu)
    array, scale = scale_page(page, config.test_page_size)
    assert max(array.shape) == round(256 * test_scale)
    with torch.inference_mode():
        own = model([to_tensor(array)])[0]
    expected = (own["boxes"] / scale).round()
    got = torch.tensor([[d.x, d.y, d.x + d.w, d.y + d.h] for d in found], dtype=torch.float32)
    assert len(found) > 10
    if not bf16:
        assert got.shape == expected.shape and torch.equal(got, expected)
        assert [d.score for d in found] == own["scores"].tolist()
    else:  # the heads are fp32: only the features moved, by bf16 rounding
        from torchvision.ops import box_iou

        assert box_iou(got, expected).max(dim=1).values.median() > 0.8


@pytest.mark.parametrize("bf16", [False, True])
def test_training_losses_through_the_split_forward(monkeypatch, bf16):
    """train_one_epoch's forward (rcnn_forward, a bf16 backbone where the CPU does bf16)
    gives the model's own losses in fp32, and losses close to them with a bf16 backbone."""
    import kzjobs.core.device
    from kzjobs.detect.engine import rcnn_forward
    from kzjobs.detect.model import build_detector

    if bf16 and not kzjobs.core.device.cpu_has_bf16():
        pytest.skip("this CPU does not do bf16 in hardware: it is never used here")
    monkeypatch.setattr(kzjobs.core.device, "cpu_has_bf16", lambda: bf16)
    config = DetectConfig(backbone="resnet18", fpn_channels=32, page_size=256)
    torch.manual_seed(0)
    model = build_detector(config, load_weights=False).train()
    images = [torch.rand(3, 256, 192), torch.rand(3, 200, 256)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [50.0, 50.0, 90.0, 120.0]]),
                "labels": torch.ones(2, dtype=torch.int64)} for _ in images]
    torch.manual_seed(1)  # the RPN and the box head sample their training boxes
    own = model(images, targets)
    torch.manual_seed(1)
    _, found, split = rcnn_forward(model, images, torch.device("cpu"), targets=targets)
    assert found == [] and split.keys() == own.keys()
    for name, value in own.items():
        if bf16:
            assert split[name].item() == pytest.approx(value.item(), rel=0.1, abs=0.01)
        else:
            assert torch.equal(split[name], value), name


def test_a_detector_loaded_for_inference_runs_channels_last_and_finds_the_same_boxes():
    """load_detector folds the trunk's batch norms into its convolutions and puts the
    weights in channels_last (faster convolutions); detect_page feeds the page in that
    layout. The boxes are those of the model as trained, up to float rounding."""
    import numpy as np
    from PIL import Image
    from torchvision.ops import box_iou

    from kzjobs.core.device import layout_of
    from kzjobs.detect.engine import detect_page
    from kzjobs.detect.model import build_detector, load_detector

    config = DetectConfig(backbone="resnet18", fpn_channels=32, page_size=256,
                          score_threshold=0.0)
    torch.manual_seed(0)
    plain = build_detector(config, load_weights=False).eval()
    loaded, _ = load_detector({"config": config.model_dump(mode="json"),
                               "model": plain.state_dict()}, config)
    assert layout_of(plain) == torch.contiguous_format
    assert layout_of(loaded) == torch.channels_last
    assert loaded.backbone.body.layer1[0].conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    page = Image.fromarray(np.random.default_rng(1).integers(0, 255, (400, 300, 3), np.uint8))
    cpu = torch.device("cpu")
    a, b = (detect_page(m, page, config, cpu) for m in (plain, loaded))
    assert len(a) > 10 and abs(len(a) - len(b)) <= len(a) // 20
    boxes = [torch.tensor([d.xyxy for d in found], dtype=torch.float32) for found in (a, b)]
    assert box_iou(*boxes).max(dim=1).values.median() > 0.95
