"""Pretraining: its weights file, loading it into the classifier and the detector, that
it helps (a learning test), and kz_retrain training it only when missing or stale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kzjobs.classify.model import RoIClassifier, start_from
from kzjobs.core.store import open_store
from kzjobs.pretrain.config import PRETRAINED, PretrainConfig
from kzjobs.pretrain.job import PretrainJob, stale_kinds
from kzjobs.pretrain.weights import WeightsIntegrityError, read_weights

FONTS = ["ipaex-mincho", "kouzan-gyousyo"]
SMALL = {"kinds": ["resnet18"], "fonts": FONTS, "vocabulary_size": 12,
         "char_size": [14, 22], "crop": [48, 32], "batch_size": 8, "steps": 2,
         "eval_samples": 8, "threads": 1}


def profile_file(tmp_path: Path, name: str = "pre", dropout: float = 0.5, **pretrain) -> str:
    """A profile with a small head and the given pretraining settings."""
    body = {"name": name, "classify": {"kinds": ["resnet18"], "hidden": 64, "dropout": dropout},
            "pretrain": SMALL | pretrain}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step pretrained resnet18 in a folder: resnet18.pt and its .sha256."""
    tmp = tmp_path_factory.mktemp("pretrained")
    out = tmp / "out"
    summary = PretrainJob(profile_name=profile_file(tmp), out=str(out),
                          register_model=False).run()
    assert summary["kinds"]["resnet18"]["classes"] == 12
    return out / "resnet18.pt"


def test_the_file_is_a_state_dict_with_its_sha256_beside(weights: Path):
    import hashlib

    assert (weights.parent / "resnet18.pt.sha256").read_text().split()[0] == \
        hashlib.sha256(weights.read_bytes()).hexdigest()
    saved = torch.load(weights, weights_only=True)  # tensors and plain data only
    assert saved["kind"] == "resnet18" and len(saved["vocabulary"]) == 12
    assert all(v.dtype != torch.float32 for v in saved["state_dict"].values())  # fp16 stored
    assert read_weights(weights)["state_dict"]["conv1.weight"].dtype == torch.float32


def test_pretrained_weights_load_into_the_classifier(weights: Path):
    saved = read_weights(weights)
    model = RoIClassifier("resnet18", 5, hidden=64)
    vocabulary = [*saved["vocabulary"][:3], "U+0041", "seg_fp"]  # 3 known, 2 never seen
    before = model.head[-1].weight.detach().clone()
    assert start_from(model, str(weights), vocabulary) == 3
    state = model.state_dict()
    for key, value in saved["state_dict"].items():
        if not key.startswith("head.5"):
            assert torch.equal(state[key], value), key  # trunk and hidden layers, as saved
    rows = saved["state_dict"]["head.5.weight"]
    assert torch.equal(state["head.5.weight"][:3], rows[:3])  # matched by code
    assert torch.equal(state["head.5.weight"][3:], before[3:])  # unseen: their own start


def test_a_head_of_another_size_leaves_the_head_alone(weights: Path):
    model = RoIClassifier("resnet18", 4, hidden=32)
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    assert start_from(model, str(weights), ["U+3042", "seg_fp", "x", "y"]) == 0
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in head.items())
    trunk = read_weights(weights)["state_dict"]
    assert torch.equal(model.layer3[0].conv1.weight, trunk["layer3.0.conv1.weight"])


def test_pretrained_weights_load_into_the_detector_backbone(weights: Path):
    from kzjobs.detect.config import DetectConfig
    from kzjobs.detect.model import build_detector

    model = build_detector(DetectConfig(backbone="resnet18", fpn_channels=16,
                                        box_head_size=32, backbone_weights=str(weights)))
    trunk = read_weights(weights)["state_dict"]
    body = model.backbone.body.state_dict()
    for key in [k for k in trunk if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer3")]:
        assert torch.equal(body[key], trunk[key]), key
    with pytest.raises(ValueError, match="do not fit"):  # another trunk is an error
        build_detector(DetectConfig(backbone="resnet34", fpn_channels=16, box_head_size=32,
                                    backbone_weights=str(weights)))


def test_a_changed_file_is_refused_by_its_sha256(weights: Path, tmp_path: Path):
    bad = tmp_path / "resnet18.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 1
    bad.write_bytes(bytes(data))
    (tmp_path / "resnet18.pt.sha256").write_text((weights.parent / "resnet18.pt.sha256")
                                                 .read_text())
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        read_weights(bad)
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        RoIClassifier("resnet18", 3, hidden=64).load_trunk(str(bad))


def test_code_in_a_weights_file_is_never_run(tmp_path: Path):
    import pickle

    from kzjobs.pretrain.weights import sha256

    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Boom()}))
    (tmp_path / "evil.pt.sha256").write_text(sha256(path.read_bytes()))
    with pytest.raises(pickle.UnpicklingError):
        read_weights(path)


def test_store_weights_without_a_sha256_are_refused(weights: Path, tmp_path: Path):
    store = open_store(tmp_path / "store")
    store.write_bytes("w/resnet18.pt", weights.read_bytes())
    with pytest.raises(WeightsIntegrityError, match=r"no \.sha256"):
        read_weights("w/resnet18.pt", store)
    store.write_text("w/resnet18.pt.sha256", (weights.parent / "resnet18.pt.sha256").read_text())
    assert read_weights("w/resnet18.pt", store)["kind"] == "resnet18"


def test_a_crop_is_the_same_whenever_it_is_drawn():
    """Item i of a seed is one crop, augmentations included: a rerun of the job (`make
    pretrained`) sees the same crops, and the held-out crops are the same for every run."""
    from kzjobs.pretrain.glyphs import GlyphCrops

    task = PretrainConfig(**SMALL)
    first, again = GlyphCrops(task, 4, seed=5), GlyphCrops(task, 4, seed=5)
    for i in (3, 0, 3):
        image, box, label = first[i]
        assert torch.equal(image, again[i][0]) and torch.equal(box, again[i][1])
        assert label == again[i][2]
    assert not torch.equal(first[0][0], GlyphCrops(task, 4, seed=6)[0][0])


def test_the_shipped_weights_load_and_match_the_demo_profile():
    from kzjobs.core.profile import load_profile

    profile = load_profile("demo")
    for kind, ref in profile.classify.weights.items():
        saved = read_weights(ref)  # sha256 checked: shipped files must have it
        assert saved["kind"] == kind
        assert saved["model_args"]["hidden"] == profile.classify.hidden
    if profile.detect.backbone_weights:
        assert read_weights(profile.detect.backbone_weights)["kind"] == profile.detect.backbone


def test_stale_when_missing_or_the_inputs_change(tmp_path: Path):
    store = open_store(tmp_path / "store")
    ref = f"{PRETRAINED}/resnet18.pt"
    path = profile_file(tmp_path)
    body = yaml.safe_load(Path(path).read_text())
    body["classify"]["weights"] = {"resnet18": ref}
    Path(path).write_text(yaml.safe_dump(body))
    assert stale_kinds(path, store) == ["resnet18"]  # missing
    PretrainJob(profile_name=path, store_uri=store.uri, register_model=False).run()
    assert stale_kinds(path, store) == []  # fresh
    again = PretrainJob(profile_name=path, store_uri=store.uri, register_model=False).run()
    assert again["kinds"]["resnet18"]["skipped"] == "fresh"
    body["pretrain"]["vocabulary_size"] = 13  # another vocabulary: stale
    Path(path).write_text(yaml.safe_dump(body))
    assert stale_kinds(path, store) == ["resnet18"]


def test_the_job_registers_a_version_in_mlflow(tmp_path: Path):
    from kzjobs.release.registry import client

    out = tmp_path / "out"
    result = PretrainJob(profile_name=profile_file(tmp_path), out=str(out)).run()
    ref = result["kinds"]["resnet18"]["model"]
    assert ref.startswith("models:/kz-pretrained/")
    version = client().get_model_version("kz-pretrained", ref.rsplit("/", 1)[1])
    assert version.tags["sha256"] == (out / "resnet18.pt.sha256").read_text().split()[0]
    assert read_weights(ref)["kind"] == "resnet18"  # downloaded, sha256 checked
    assert read_weights("models:/kz-pretrained@resnet18")["kind"] == "resnet18"


@pytest.mark.slow
def test_training_from_pretrained_weights_learns_faster(tmp_path: Path):
    """The same few steps on the same batches of new crops (another seed): the classifier
    that starts from pretrained weights (its frozen layers and head among them) reads
    them clearly better than one from scratch."""
    from kzjobs.data.format import char_to_code
    from kzjobs.pretrain.glyphs import GlyphCrops, collate

    out = tmp_path / "out"
    # Characters of 24-36 px: at 14-22 px a 150-step run barely moves.
    larger = {"crop": [64, 48], "char_size": [24, 36], "batch_size": 16}
    pre = profile_file(tmp_path, dropout=0.1, steps=150, lr=2e-3, eval_samples=64, **larger)
    result = PretrainJob(profile_name=pre, out=str(out), register_model=False).run()
    assert result["kinds"]["resnet18"]["glyph_accuracy"] > 0.5  # chance: 1/12
    # Fonts it never saw read above chance too, and below its own fonts.
    dev = result["kinds"]["resnet18"]["dev_font_glyph_accuracy"]
    assert 1 / 12 < dev <= result["kinds"]["resnet18"]["glyph_accuracy"] + 0.1
    task = PretrainConfig(**(SMALL | larger))
    train = GlyphCrops(task, 16 * 10, seed=7)
    test = collate([GlyphCrops(task, 128, seed=8)[i] for i in range(128)])
    vocabulary = [*sorted(char_to_code(c) for c in train.chars), "seg_fp"]  # as a dataset's
    index = {char_to_code(c): vocabulary.index(char_to_code(c)) for c in train.chars}
    recode = torch.tensor([index[char_to_code(c)] for c in train.chars])

    def accuracy_after_training(pretrained: bool) -> float:
        torch.manual_seed(0)
        model = RoIClassifier("resnet18", len(vocabulary), hidden=64, dropout=0.1)
        if pretrained:
            assert start_from(model, str(out / "resnet18.pt"), vocabulary) == 12
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                    lr=0.01, momentum=0.9)
        for batch in torch.utils.data.DataLoader(train, batch_size=16, collate_fn=collate):
            loss = torch.nn.functional.cross_entropy(
                model(batch["images"], batch["boxes"]), recode[batch["targets"]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            predicted = model(test["images"], test["boxes"]).argmax(1)
        return float((predicted == recode[test["targets"]]).float().mean())

    scratch, pretrained = accuracy_after_training(False), accuracy_after_training(True)
    assert pretrained >= scratch + 0.2, (scratch, pretrained)
