import pytest
import torch

from edgekd.errors import CheckpointError
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.io import load_checkpoint, save_checkpoint


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    m = build_model(ArchSpec(width=0.25, depth=1), 4, 3, mean=[0.1] * 4, std=[0.2] * 4)
    path = tmp_path / "t.pt"
    save_checkpoint(path, m, classes=["a", "b", "c"], bands=list("RGBN"), image_size=16, dataset="d", role="teacher")
    loaded, meta = load_checkpoint(path)
    x = torch.rand(2, 4, 16, 16)
    m.eval()
    assert torch.equal(loaded(x), m(x))
    assert meta["classes"] == ["a", "b", "c"] and meta["arch"]["width"] == 0.25 and meta["role"] == "teacher"


@pytest.mark.parametrize("content, message", [
    (b"garbage bytes", "cannot be read safely"),
    (None, "does not exist"),
])
def test_unreadable_checkpoints(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_foreign_and_pickled_checkpoints_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an edgekd checkpoint"):
        load_checkpoint(plain)
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled module: would run code on load
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(pickled)
