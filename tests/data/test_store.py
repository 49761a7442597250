"""The image cache: an image folder decoded once into a memory-mapped array, served as float32
batches; equal to decoding each file; reused while the folder is unchanged, rebuilt when it
changes; and the trainer's DataLoader pipeline over it trains exactly as over a tensor."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import edgekd.data.folder as folder
from edgekd.data.folder import _read_image, load_image_folder
from edgekd.data.store import ImageArray, StackedImages, as_tensor, inference_batch, rows_per_chunk, stack, take
from edgekd.distill.trainer import data_workers, train
from edgekd.errors import ConfigError
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model


def _folder(root, n=6, size=20):
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    (root / "a" / "notes.txt").write_text("not an image")
    return root


def test_cached_folder_equals_decoding_every_file(tmp_path):
    root = _folder(tmp_path / "d")
    ds = load_image_folder(root, image_size=16, seed=0, val_fraction=0.34)
    assert isinstance(ds.x_train, ImageArray) and ds.x_train.shape == (12, 3, 16, 16)
    files = [root / c / f"{i}.png" for c in ("a", "b", "c") for i in range(6)]
    every = np.stack([_read_image(f, 16) for f in sorted(files, key=lambda p: (p.parent.name, p.name))])
    labels = np.repeat([0, 1, 2], 6)
    got = np.concatenate([as_tensor(ds.x_train).numpy(), as_tensor(ds.x_val).numpy()])
    got_y = np.concatenate([ds.y_train.numpy(), ds.y_val.numpy()])
    for c in range(3):  # the same images per class, whatever the split drew
        want = every[labels == c]
        have = got[got_y == c]
        assert sorted(map(bytes, (want * 255).round().astype(np.uint8))) == sorted(
            map(bytes, (have * 255).round().astype(np.uint8)))
    assert np.allclose(got, np.clip(got, 0, 1)) and ds.skipped_files == [str(root / "a" / "notes.txt")]


def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d")
    first = load_image_folder(root, image_size=16, seed=0, val_fraction=0.34)
    calls = []
    real = folder._read_image
    monkeypatch.setattr(folder, "_read_image", lambda f, s: calls.append(f) or real(f, s))
    again = load_image_folder(root, image_size=16, seed=0, val_fraction=0.34)
    assert calls == [] and torch.equal(as_tensor(again.x_train), as_tensor(first.x_train))  # nothing decoded
    target = root / "b" / "3.png"
    Image.fromarray(np.full((20, 20, 3), 255, np.uint8)).save(target)
    os.utime(target, ns=(1, 1))  # a changed file: another size or time, another cache
    changed = load_image_folder(root, image_size=16, seed=0, val_fraction=0.34)
    assert len(calls) == 18  # every image decoded again
    assert not torch.equal(torch.cat([as_tensor(changed.x_train), as_tensor(changed.x_val)]).sum(0),
                           torch.cat([as_tensor(first.x_train), as_tensor(first.x_val)]).sum(0))
    assert load_image_folder(root, image_size=12, seed=0, val_fraction=0.34).image_size == 12  # its own cache


def test_image_array_indexing_and_statistics():
    data = np.arange(5 * 2 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2, 2)
    a = ImageArray(data, [255.0, 255.0])
    assert torch.equal(a[torch.tensor([3, 0])], torch.from_numpy(data[[3, 0]] / np.float32(255)))
    assert a[2].shape == (2, 2, 2) and len(a[1:4]) == 3
    v = a.view(rows=np.array([4, 1]), bands=[1])
    assert v.shape == (2, 1, 2, 2) and torch.equal(v[0], torch.from_numpy(data[4, 1:2] / np.float32(255)))
    mean, std = a.channel_stats(chunk=2)
    t = torch.from_numpy(data / np.float32(255))
    assert torch.allclose(mean, t.mean(dim=(0, 2, 3))) and torch.allclose(std, t.std(dim=(0, 2, 3)))


@pytest.mark.parametrize("workers", ["0", "1"])
def test_training_from_the_cache_equals_training_from_a_tensor(tmp_path, monkeypatch, workers):
    monkeypatch.setenv("EDGEKD_DATA_WORKERS", workers)
    ds = load_image_folder(_folder(tmp_path / "d", n=10), image_size=16, seed=0, val_fraction=0.2)
    losses = []
    for x in (ds.x_train, as_tensor(ds.x_train)):
        torch.manual_seed(0)
        m = build_model(ArchSpec(width=0.25, depth=1), 3, 3)
        losses.append(train(m, x, ds.y_train, epochs=2, batch_size=8, lr=1e-2, seed=0).epoch_loss)
    assert losses[0] == losses[1]


def test_bulk_reads_are_bounded_by_bytes_not_by_image_count():
    small, large = torch.zeros(10, 3, 64, 64), torch.zeros(10, 3, 256, 256)
    assert rows_per_chunk(small) == (64 << 20) // (4 * 3 * 64 * 64)  # 1365 images of 48 KB
    assert rows_per_chunk(large) == (64 << 20) // (4 * 3 * 256 * 256)  # 85 of 768 KB
    assert inference_batch(small) == 85 and inference_batch(large) == 5
    assert rows_per_chunk(torch.zeros(2, 3, 4096, 4096)) == 1  # never zero


def test_data_workers_default_to_none_on_small_machines(monkeypatch):
    monkeypatch.delenv("EDGEKD_DATA_WORKERS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert data_workers() == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert data_workers() == 4
    monkeypatch.setenv("EDGEKD_DATA_WORKERS", "2")
    assert data_workers() == 2
    monkeypatch.setenv("EDGEKD_DATA_WORKERS", "two")
    with pytest.raises(ConfigError, match="EDGEKD_DATA_WORKERS='two' is not a whole number"):
        data_workers()


def test_stacked_images_read_each_source_on_demand_and_equal_their_concatenation():
    rng = np.random.default_rng(0)
    a = ImageArray(rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8), [255.0] * 3)
    b = ImageArray(rng.integers(0, 65536, (4, 3, 4, 4), dtype=np.uint16), [65535.0] * 3)
    t = torch.rand(3, 3, 4, 4)
    s = stack([a, take(b, np.array([3, 0, 2])), t])
    assert isinstance(s, StackedImages) and s.shape == (11, 3, 4, 4)
    whole = torch.cat([a[:], b[torch.tensor([3, 0, 2])], t])
    assert torch.equal(s[:], whole)
    order = torch.tensor([10, 0, 6, 5, 7])
    assert torch.equal(s[order], whole[order]) and torch.equal(s[6], whole[6])
    v = s.view(rows=np.array([9, 1, 5]), bands=[2, 0])
    assert torch.equal(v[:], whole[[9, 1, 5]][:, [2, 0]])
    nested = stack([s.view(rows=np.array([9, 1])), a])  # a stack of a stack stays flat and lazy
    assert isinstance(nested, StackedImages) and all(not isinstance(p, StackedImages) for p in nested.parts)
    assert torch.equal(nested[:], torch.cat([whole[[9, 1]], a[:]]))
    mean, std = s.channel_stats(chunk=4)
    assert torch.allclose(mean, whole.mean(dim=(0, 2, 3))) and torch.allclose(std, whole.std(dim=(0, 2, 3)))
    assert torch.equal(stack([t, t]), torch.cat([t, t]))  # tensors alone are simply concatenated


def test_merging_an_update_keeps_cached_images_in_the_cache(tmp_path):
    from edgekd.pipeline.lineage import merge

    new = load_image_folder(_folder(tmp_path / "new", n=6), image_size=8, seed=0, val_fraction=0.34)
    old = load_image_folder(_folder(tmp_path / "old", n=9), image_size=8, seed=1, val_fraction=0.34)
    merged, n = merge(new, [old], new.classes, replay_fraction=0.5, seed=0)
    assert isinstance(merged.x_train, StackedImages) and isinstance(merged.x_val, StackedImages)
    assert n == round(0.5 * len(new.y_train)) and len(merged.x_train) == len(merged.y_train) == len(new.y_train) + n
    assert torch.equal(merged.x_train[:len(new.y_train)], new.x_train[:])
    replayed = merged.x_train[len(new.y_train):]
    old_x = old.x_train[:]
    for img, label in zip(replayed, merged.y_train[len(new.y_train):]):  # each replayed image keeps its label
        hit = [(img == o).all().item() for o in old_x]
        assert any(hit) and old.y_train[hit.index(True)] == label
    assert torch.equal(merged.x_val[:], torch.cat([new.x_val[:], old.x_val[:]]))
