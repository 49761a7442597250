"""Defects on the newer paths (model sources, data splits, flags that only mean something beside
another): each bad input is one line naming the problem and the fix, before any work."""

from pathlib import Path

import pytest

from edgekd.config import build_config, parse_flags
from edgekd.errors import CheckpointError, ConfigError, DataError
from edgekd.models.sources import SourceRequest, load_model
from edgekd.pipeline.plan import StageTimer, resolve_run

from .data.test_folder import make_folder

REQ = SourceRequest(in_channels=3, num_classes=10, data_mean=[0.0] * 3, data_std=[1.0] * 3)


def plan(**given):
    return resolve_run(build_config({"preset": "smoke", "samples_per_class": 4, **given}), False, StageTimer())


def test_a_file_named_onnx_that_is_not_onnx_is_named_so(tmp_path: Path):
    fake = tmp_path / "teacher.onnx"
    fake.write_text("not a protobuf at all")
    with pytest.raises(CheckpointError, match="is not an ONNX model") as exc:
        load_model(str(fake), REQ)
    assert "band" not in str(exc.value)


def test_a_factory_that_raises_is_one_line():
    with pytest.raises(ConfigError, match=r"broken\(\) raised weights file missing on this machine; fix the factory"):
        load_model("tests.models.factory_models:broken", REQ)


def test_a_bad_device_timeout_names_the_flag_that_exists():
    with pytest.raises(ConfigError) as exc:
        build_config(parse_flags({"device_timeout_s": 0}))
    assert "for --device-timeout:" in str(exc.value) and "--device-timeout-s" not in str(exc.value)


def test_teacher_bands_all_means_every_band():
    p = plan(teacher_bands=["all"], student_bands=["R", "G", "B"])
    assert p.teacher_view.bands == ["R", "G", "B", "NIR"] and p.ds.bands == ["R", "G", "B"]


def test_teacher_weights_without_a_teacher_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="add --teacher"):
        plan(teacher_weights_file=str(tmp_path / "w.pth"))


def test_kd_weighting_without_a_soft_target_term_is_refused():
    with pytest.raises(ConfigError, match="--kd-weighting entropy weights the soft-target terms"):
        plan(kd=["relation"], kd_weighting="entropy")
    assert plan(kd=["response", "relation"], kd_weighting="entropy").kd.weighting == "entropy"


def test_a_split_that_puts_an_image_in_train_and_val_is_refused(tmp_path: Path):
    root = make_folder(tmp_path / "data", ("forest", "water"), n=4)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
    split = tmp_path / "split.yaml"
    split.write_text("train: [" + ", ".join(files) + "]\nval: [" + files[0] + "]\n")
    with pytest.raises(DataError, match="in both train and val"):
        plan(data=str(root), split_file=str(split))


@pytest.mark.parametrize("given, message", [
    ({"kd": ["response", "feature"], "feature_pairs": "0=99"}, "teacher stage 99, but the teacher has stages 0..2"),
    ({"kd": ["response", "feature"], "feature_pairs": "7=1"}, "student stage 7"),
    ({"kd": ["response"], "feature_pairs": "0=1"}, "but --kd has none"),
])
def test_stage_index_pairs_are_checked_before_any_work(tmp_path: Path, given, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        flags = parse_flags({"out": out, **given}).given()  # "0=99" parsed as the command line does
        resolve_run(build_config({**flags, "preset": "smoke", "samples_per_class": 4}), False, StageTimer())
    assert not out.exists()  # nothing written: config.yaml never holds the bad pair


def test_the_same_board_twice_is_refused_before_any_connection(tmp_path: Path):
    from edgekd.measurers import measurer_for
    from edgekd.profilers import ProfileSettings
    from edgekd.targets import get_target

    devices = tmp_path / "boards.yaml"
    devices.write_text("boards:\n  - {url: 'http://127.0.0.1:9', label: a}\n"
                       "  - {url: 'http://127.0.0.1:9/', label: b}\n")
    with pytest.raises(ConfigError, match=r"board http://127.0.0.1:9 is listed twice \('a' and 'b'\)"):
        measurer_for(get_target("cpu"), ProfileSettings(threads=1), devices_file=devices)
    with pytest.raises(ConfigError, match="listed twice"):
        measurer_for(get_target("cpu"), ProfileSettings(threads=1),
                     device_url=["http://127.0.0.1:9", "http://127.0.0.1:9/"])


class _CtrlC:
    """An observer the user interrupts when the teacher starts training."""

    def __getattr__(self, name):
        from edgekd.console import ConsoleObserver

        return getattr(ConsoleObserver(quiet=True), name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def on_rung_start(self, label, steps, info):
        raise KeyboardInterrupt


def test_ctrl_c_says_what_was_kept_and_how_to_continue(tmp_path: Path, capsys):
    import typer

    from edgekd.cli.app import user_errors
    from edgekd.errors import Interrupted
    from edgekd.pipeline import run_optimize

    out = tmp_path / "run"
    with pytest.raises(Interrupted) as exc:
        run_optimize(build_config({"preset": "smoke", "samples_per_class": 4, "out": str(out)}), _CtrlC())
    assert f"edgekd optimize --resume {out}" in exc.value.detail and (out / "config.yaml").is_file()

    @user_errors
    def command():
        raise exc.value

    with pytest.raises(typer.Exit) as code:
        command()
    assert code.value.exit_code == 130 and "--resume" in capsys.readouterr().err


def test_what_a_ray_task_receives_names_absolute_paths(tmp_path: Path, monkeypatch):
    """Ray workers do not run in the driver's working directory: a relative --out must not reach them."""
    import pickle

    import torch

    from edgekd.distill.teacher import TeacherOutputs
    from edgekd.search.workers import RungUnit

    monkeypatch.chdir(tmp_path)
    out = TeacherOutputs.build(Path("run") / "teacher_cache", [torch.nn.Conv2d(3, 2, 1)], torch.rand(4, 3, 8, 8))
    blob = pickle.dumps(out)
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = pickle.loads(blob)
    assert again.folder.is_absolute() and again.logits[0].shape == out.logits[0].shape
    unit = RungUnit(trainer=None, run_dir=Path("dp"), epochs=[1], seed=0, meta={})  # type: ignore[arg-type]
    assert unit.absolute().run_dir == elsewhere / "dp"


def test_an_unreachable_ray_address_is_refused_before_any_work():
    import socket

    from edgekd.pipeline.plan import check_ray_address

    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=f"--ray-address 127.0.0.1:{port}: nothing answers"):
        check_ray_address(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="nothing answers"):
        check_ray_address(f"ray://127.0.0.1:{port}")
    check_ray_address("auto")  # Ray's own names are Ray's to resolve


def test_a_corrupt_pt2_is_our_one_line_without_torch_logging_a_traceback(tmp_path: Path, capfd):
    bad = tmp_path / "teacher.pt2"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="cannot be loaded as a torch.export program"):
        load_model(str(bad), REQ)
    assert "Traceback" not in capfd.readouterr().err


def test_fixed_size_programs_are_fed_at_their_own_size_and_the_rest_are_named(tmp_path: Path):
    import torch
    import torch.nn.functional as F
    from torch import nn

    from edgekd.convert.onnx import to_onnx

    # a program that only takes 64x64 (its Linear reads the flattened map), exported at a fixed size
    module = nn.Sequential(nn.Conv2d(3, 2, 3, stride=8, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 10)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(module, (torch.rand(2, 3, 64, 64),), dynamic_shapes=({0: batch},)),
                      str(tmp_path / "m.pt2"))
    torch.export.save(torch.export.export(module, (torch.rand(1, 3, 64, 64),)), str(tmp_path / "one.pt2"))
    dynamic_batch = to_onnx(module, tmp_path / "m.onnx", [1, 3, 64, 64])
    one = tmp_path / "one.onnx"  # batch 1 as well as 64x64, as many exports are
    torch.onnx.export(module, (torch.rand(1, 3, 64, 64),), str(one), dynamo=False, input_names=["x"])
    x32 = torch.rand(5, 3, 32, 32)  # the data is 32x32: each program sees it resized to 64x64, in its batch size
    with torch.no_grad():
        want = module(F.interpolate(x32, size=(64, 64), mode="bilinear", align_corners=False))
    for path in (tmp_path / "m.pt2", tmp_path / "one.pt2", dynamic_batch, one):
        got = load_model(str(path), REQ).model(x32)
        assert got.shape == (5, 10) and torch.allclose(got, want, atol=1e-4), path.name
    # a fixed band count is named as such; a program without shape information is refused naming the size
    with pytest.raises(CheckpointError, match="takes 3-band images, the data has 4 bands"):
        load_model(str(one), SourceRequest(**{**REQ.__dict__, "in_channels": 4, "data_mean": [0.0] * 4,
                                              "data_std": [1.0] * 4}))
    torch.jit.trace(module, torch.rand(1, 3, 64, 64)).save(str(tmp_path / "m.ts"))
    with pytest.raises(CheckpointError, match="cannot run on 3-band images of 32x32 px, the data's"):
        load_model(str(tmp_path / "m.ts"), REQ)
    at64 = SourceRequest(**{**REQ.__dict__, "image_size": 64})
    assert load_model(str(tmp_path / "m.ts"), at64).model(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_a_traced_torchscript_teacher_exports_to_onnx_behind_its_normalisation(tmp_path: Path):
    import numpy as np
    import onnxruntime as ort
    import torch
    from torch import nn

    from edgekd.convert.onnx import to_onnx

    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(8, 10)).eval()
    torch.jit.trace(module, torch.rand(1, 3, 32, 32)).save(str(tmp_path / "t.pt"))
    req = SourceRequest(**{**REQ.__dict__, "normalization": "imagenet"})
    teacher = load_model(str(tmp_path / "t.pt"), req).model
    path = to_onnx(teacher, tmp_path / "teacher.onnx", [1, 3, 32, 32], metadata={"role": "teacher"})
    x = torch.rand(4, 3, 32, 32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, teacher(x).numpy(), atol=1e-5)  # the normalisation is in the graph


def test_a_workers_own_error_reaches_the_user_as_one_line():
    from edgekd.search.workers import root_cause

    class Wrapper(Exception):  # Ray's wrappers: a long message, the worker's error as the cause
        def __init__(self, cause):
            super().__init__("ControllerError\nTraceback (most recent call last):\n  ... RayTrainWorker.run_train_fn()")
            self.cause = cause

    try:
        try:
            raise FileNotFoundError(2, "No such file or directory", "dp/teacher_cache/x/meta.json")
        except FileNotFoundError as inner:
            raise RuntimeError("Training failed") from Wrapper(inner)
    except RuntimeError as outer:
        line = root_cause(outer)
    assert line.startswith("FileNotFoundError: [Errno 2] No such file or directory") and "\n" not in line
    assert root_cause(ValueError("plain")) == "ValueError: plain"
