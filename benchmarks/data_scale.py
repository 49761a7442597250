"""Benchmark: data at scale. Peak resident memory and time of the data path -- load the folder,
per-band statistics, one epoch of student training, predictions on the validation split -- with
the image cache (this checkout) and with the loader before it (every image decoded into one
float32 array in memory: `--before-rev`, checked out in a temporary git worktree), each in a
fresh process; and the cache's first run (decode) against its second (memory-mapped read).

Folders are generated from the synthetic demo generator's land-cover classes: EuroSAT-sized (27,000
JPEG tiles at 64x64, 10 classes) and RESISC45-like (3,000 JPEG tiles at 256x256, 10 classes).

Run:  python benchmarks/data_scale.py [--before-rev 621a9f2] [--eurosat 27000] [--resisc 3000]
Records benchmarks/results/data_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import torch
from pathlib import Path
t0 = time.perf_counter()
from edgekd.data.folder import load_image_folder
from edgekd.distill.trainer import predict_logits, train
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
torch.set_num_threads(2)
size = int(sys.argv[2])
ds = load_image_folder(Path(sys.argv[1]), image_size=size, seed=0, val_fraction=0.2)
t_load = time.perf_counter() - t0
mean, std = ds.channel_stats()
t1 = time.perf_counter()
m = build_model(ArchSpec(width=0.25, depth=1), 3, len(ds.classes), mean, std)
train(m, ds.x_train, ds.y_train, epochs=1, batch_size=64, lr=1e-3, seed=0)
t_epoch = time.perf_counter() - t1
predict_logits(m, ds.x_val)
print(json.dumps({"load_s": t_load, "epoch_s": t_epoch, "train": len(ds.y_train), "val": len(ds.y_val),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(root: Path, n: int, size: int, classes: int = 10, seed: int = 0) -> Path:
    """`n` JPEG tiles of `size` px: smooth random fields with a class-specific colour."""
    from PIL import Image
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 215, (classes, 3))
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True)
    for i in range(n):
        c = i % classes
        low = rng.normal(0, 30, (8, 8, 3))
        tile = np.clip(colours[c] + zoom(low, (size / 8, size / 8, 1), order=1), 0, 255).astype(np.uint8)
        Image.fromarray(tile).save(root / f"class{c:02d}" / f"{i}.jpg", quality=90)
    return root


def run(folder: Path, size: int, pythonpath: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "EDGEKD_CACHE_DIR": str(cache), "EDGEKD_DATA_WORKERS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(size)], capture_output=True, text=True,
                          env=env, cwd=pythonpath)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-rev", default="621a9f2")
    ap.add_argument("--eurosat", type=int, default=27000)
    ap.add_argument("--resisc", type=int, default=3000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekd-scale-"))
    before = work / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before_rev], check=True,
                   capture_output=True)
    rows = []
    try:
        for name, n, size in (("EuroSAT-sized", args.eurosat, 64), ("RESISC45-like", args.resisc, 256)):
            t0 = time.perf_counter()
            folder = generate(work / name, n, size)
            print(f"{name}: {n} tiles at {size} px generated in {time.perf_counter() - t0:.0f} s", flush=True)
            cache = work / f"cache-{name}"
            for label, path in (("before (float32 in memory)", before), ("image cache, first run", REPO),
                                ("image cache, second run", REPO)):
                r = run(folder, size, path, cache)
                rows.append({"data": name, "images": n, "size": size, "loader": label, **r,
                             "load1": os.getloadavg()[0]})
                print(rows[-1], flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    record(rows, args)


def record(rows: list[dict], args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_scale.json").write_text(json.dumps({"rows": rows, "before_rev": args.before_rev,
                                                          "source": "measured"}, indent=1))
    lines = ["# Data at scale: the image cache vs the float32 in-memory loader (measured)", "",
             "Each row is a fresh process: load the folder (80/20 split), per-band statistics, one epoch of an "
             "EdgeNet w0.25-d1 student (batch 64, 2 threads, 1 data worker for the cache), predictions on the "
             f"validation split. 'before' is the loader of commit {args.before_rev} (every image decoded into one "
             "float32 array). Peak RSS from getrusage; load average at each row.", "",
             "| data | loader | load s | epoch s | wall s | peak RSS MB | load1 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['data']} ({r['images']} x {r['size']} px) | {r['loader']} | {r['load_s']:.1f} | "
              f"{r['epoch_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['load1']:.2f} |" for r in rows]
    lines += ["", f"Command: `python benchmarks/data_scale.py --before-rev {args.before_rev} --eurosat {args.eurosat} "
                  f"--resisc {args.resisc}`."]
    (RESULTS / "data_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
