"""Failure paths found by an attack on the CLI: non-finite numbers never pass silently."""

import os
import shutil

import numpy as np
import pytest
import torch

from edgekd.config import build_config
from edgekd.distill.losses import parse_kd
from edgekd.distill.trainer import train
from edgekd.errors import ConfigError, TrainingError
from edgekd.export.parity import compare_logits
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.tolerances import default_tolerance


def test_nan_logits_fail_the_parity_gate():
    ref = np.zeros((4, 3), dtype=np.float32)
    got = ref.copy()
    got[1, 2] = np.nan
    parity = compare_logits(ref, got, np.zeros(4, dtype=np.int64))
    assert parity.non_finite == 1
    assert any("NaN or infinite" in v for v in parity.violations(default_tolerance("fp32")))
    assert compare_logits(ref, ref, np.zeros(4, dtype=np.int64)).violations(default_tolerance("fp32")) == []


@pytest.mark.parametrize("spec", ["response:-1", "response:nan", "feature:inf"])
def test_kd_weights_must_be_finite_and_not_negative(spec):
    with pytest.raises(ConfigError, match="must be a finite number >= 0"):
        parse_kd(spec)


@pytest.mark.parametrize("key, value", [("budget_ms", float("nan")), ("lr", float("inf")),
                                        ("kd_alpha", float("nan")), ("max_accuracy_drop", -0.1)])
def test_non_finite_or_negative_settings_are_refused_at_the_start(key, value):
    with pytest.raises(ConfigError, match=f"--{key.replace('_', '-')}"):
        build_config({key: value})


def test_a_diverging_training_stops_with_a_clear_error():
    torch.manual_seed(0)
    model = build_model(ArchSpec(width=0.25, depth=1), 3, 2)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 2, (8,))
    with pytest.raises(TrainingError, match=r"training diverged: the loss is nan at epoch 1 .*lower --lr"):
        train(model, x, y, epochs=2, batch_size=4, lr=float("inf"), seed=0)  # the first step makes the weights NaN


def test_a_second_optimize_on_a_run_directory_in_use_is_refused(tmp_path):
    from edgekd.pipeline.plan import lock_run_dir

    from .conftest import run_cli

    run = tmp_path / "run"
    run.mkdir()
    held = lock_run_dir(run)  # as a running optimize holds it
    try:
        proc = run_cli("optimize", "--preset", "smoke", "--out", str(run), "--overwrite")
        assert proc.returncode == 2 and f"is in use by another edgekd optimize (pid {os.getpid()})" in proc.stderr
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing of the second run was written
    finally:
        held.close()


def test_a_failed_onnx_write_leaves_no_torn_file(tmp_path, monkeypatch):
    import onnx

    from edgekd.convert.onnx import to_onnx
    from edgekd.errors import ExportError

    def disk_full(proto, path):
        with open(path, "wb") as f:
            f.write(b"\x08\x07")  # a few bytes, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", disk_full)
    target = tmp_path / "rung0.onnx"
    with pytest.raises(ExportError, match="No space left on device"):
        to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 2), target, [1, 3, 16, 16])
    assert list(tmp_path.iterdir()) == []  # neither the model nor a temporary file: --resume redoes it


def test_a_corrupt_measurement_cache_is_moved_aside_and_rebuilt(tmp_path, capsys):
    from edgekd.profilers import MeasurementCache

    path = tmp_path / "measurements.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = MeasurementCache(path)
    assert cache.recovered is not None and cache.recovered.read_bytes().startswith(b"this is not a database")
    assert len(cache) == 0  # a fresh, working cache in its place
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: the measurement cache {path} was unreadable")


def test_16_bit_images_are_scaled_by_their_depth_and_bombs_refused(tmp_path, monkeypatch):
    from PIL import Image

    from edgekd.data.folder import load_image_folder
    from edgekd.data.store import as_tensor
    from edgekd.errors import DataError

    for cls, level in (("dark", 6000), ("bright", 50000)):
        (tmp_path / cls).mkdir()
        for i in range(4):
            Image.fromarray(np.full((40, 40), level + i, dtype=np.uint16)).save(tmp_path / cls / f"{i}.png")
    ds = load_image_folder(tmp_path, image_size=16, seed=0, val_fraction=0.25)
    x = torch.cat([as_tensor(ds.x_train), as_tensor(ds.x_val)])  # served from the uint16 image cache
    means = sorted(float(v) for v in x.mean(dim=(1, 2, 3)))
    assert means[0] == pytest.approx(6000 / 65535, abs=1e-3) and means[-1] == pytest.approx(50003 / 65535, abs=1e-3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40x40 = 1600 pixels: over twice the limit
    fresh = shutil.copytree(tmp_path, tmp_path.parent / f"{tmp_path.name}-copy")  # not in the cache yet
    with pytest.raises(DataError, match="is too large to decode safely"):
        load_image_folder(fresh, image_size=16, seed=0, val_fraction=0.25)


@pytest.mark.slow
def test_overwrite_starts_clean_and_keeps_foreign_files(smoke_run, tmp_path):
    import json
    import shutil

    from .conftest import run_cli

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    (run / "candidates" / "w9-d9-e2-k3").mkdir()
    (run / "candidates" / "w9-d9-e2-k3" / "rung0.json").write_text("{}")  # a stale unit of an earlier run
    (run / "my-notes.txt").write_text("mine")
    old = {p.relative_to(run): p.read_bytes() for p in (run / "candidates").rglob("rung0.json")}
    proc = run_cli("optimize", "--preset", "smoke", "--seed", "2", "--out", str(run), "--overwrite", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "candidates" / "w9-d9-e2-k3").exists() and (run / "my-notes.txt").read_text() == "mine"
    r = json.loads((run / "report.json").read_text())
    assert r["config"]["seed"] == 2 and not r["resumed"]
    for p in (run / "candidates").rglob("rung0.json"):  # every unit trained again, none taken from the old run
        assert p.read_bytes() != old.get(p.relative_to(run))


def test_a_figure_is_labelled_with_the_precision_the_model_has(tmp_path):
    from edgekd.convert.onnx import to_onnx
    from edgekd.convert.qdq import calibration_batches, quantize_qdq
    from edgekd.errors import ProfilingError
    from edgekd.profilers import ProfileSettings, profile_model
    from edgekd.targets import get_target

    shape = [1, 3, 16, 16]
    fp32 = to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 2), tmp_path / "m.onnx", shape)
    int8 = quantize_qdq(fp32, tmp_path / "m.int8.onnx", calibration_batches(None, shape, n=4))
    fast = dict(threads=1, warmup=1, min_runs=3, min_seconds=0.0, measure_memory=False, energy_meter="none")
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(ProfilingError, match="m.onnx is a fp32 model, not int8: profile it with --precision fp32"):
            profile_model(fp32, get_target("cpu"), runtime, shape, ProfileSettings(precision="int8", **fast))
        with pytest.raises(ProfilingError, match="m.int8.onnx is a int8 model, not fp32"):
            profile_model(int8, get_target("cpu"), runtime, shape, ProfileSettings(precision="fp32", **fast))
        m = profile_model(int8, get_target("cpu"), runtime, shape, ProfileSettings(precision="int8", **fast))
        assert m.precision == "int8"


def test_a_benchmark_row_labels_each_figure_with_its_own_source():
    """A row measured through the agent is `remote`, but its energy estimate was predicted: said so."""
    from edgekd.benchmark import BenchRow, render_markdown

    row = BenchRow(model="m.onnx", format="onnx", precision="fp32", target="cpu", runtime="onnxruntime", p50_ms=1.0,
                   p90_ms=1.2, peak_memory_mb=30.0, energy_mj=15.0, source="remote",
                   sources={"latency": "remote", "peak_memory": "remote", "energy": "predicted"},
                   contended="some task waited for a CPU 60% of the window")
    md = render_markdown([row])
    assert "15.0000 (predicted)" in md and "30.0 |" in md and "30.0 (remote)" not in md
    assert "1.200 (contended)" in md


@pytest.mark.serial
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped one, on purpose
def test_a_ctrl_c_dropped_in_a_finaliser_is_raised_again_at_the_next_check():
    """Python prints and drops an exception raised in a __del__ (e.g. a DataLoader iterator shutting
    its workers down): with the CLI's guard the Ctrl-C is remembered and the trainer's batch loop
    raises it again."""
    import signal

    from edgekd import interrupts

    saved = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background run ignores it)
        interrupts.guard_interrupts()

        class Finaliser:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while a finaliser runs
                sum(range(10_000))  # Python runs the handler here: its KeyboardInterrupt is dropped

        Finaliser()  # dropped at once, and with it the KeyboardInterrupt: the program would go on
        with pytest.raises(KeyboardInterrupt):
            interrupts.check_interrupted()
    finally:
        signal.signal(signal.SIGINT, saved)
        interrupts._pending = False
    interrupts.check_interrupted()  # nothing pending: nothing raised


def test_the_batch_loop_raises_a_remembered_ctrl_c():
    """Images read through the data loader (the image cache): a Ctrl-C remembered by the guard stops
    the batch loop at its next batch, and after the loader has shut down."""
    from edgekd import interrupts
    from edgekd.data.store import ImageArray
    from edgekd.distill.trainer import batches

    images = ImageArray(np.zeros((8, 3, 4, 4), dtype=np.uint8), [255.0] * 3)
    loop = batches(images, torch.arange(8), 4)
    next(loop)
    try:
        interrupts._pending = True
        with pytest.raises(KeyboardInterrupt):
            next(loop)
        interrupts._pending = False
        one = batches(images, torch.arange(4), 4)  # one batch: the check after the loader is done
        next(one)
        interrupts._pending = True
        with pytest.raises(KeyboardInterrupt):
            next(one)
    finally:
        interrupts._pending = False
