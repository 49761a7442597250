"""Benchmark: data at scale. Peak resident memory and time of the data path -- load the folder,
per-band statistics, one epoch of student training, predictions on the validation split -- with
the image cache (this checkout) and with the loader before it (every image decoded into one
float32 array in memory: `--before-rev`, checked out in a temporary git worktree), each in a
fresh process; and the cache's first run (decode) against its second (memory-mapped read).

Folders are generated from the synthetic demo generator's land-cover classes: EuroSAT-sized (27,000
JPEG tiles at 64x64, 10 classes) and RESISC45-like (3,000 JPEG tiles at 256x256, 10 classes).

Also: the model alone (the same student trained on two random batches of the same size: the
floor any loader sits on), an epoch-time comparison in one process, interleaved (float32 tensor,
image cache read in the training process, image cache with one reader process), and with
`--optimize` the whole `edgekd optimize --preset smoke` on the EuroSAT-sized folder at its native
64 px (every image: `max_samples_per_class` lifted; 1 teacher and 1 student epoch) before and after.

Run:  python benchmarks/data_scale.py [--before-rev 621a9f2] [--eurosat 27000] [--resisc 3000] [--optimize]
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
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "reader_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

FLOOR = r"""
import json, resource, sys, torch
from edgekd.distill.trainer import train
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
torch.set_num_threads(2)
size = int(sys.argv[1])
x, y = torch.rand(128, 3, size, size), torch.arange(128) % 10
m = build_model(ArchSpec(width=0.25, depth=1), 3, 10, [0.5] * 3, [0.25] * 3)
train(m, x, y, epochs=1, batch_size=64, lr=1e-3, seed=0)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

EPOCHS = r"""
import json, os, sys, time, torch
from pathlib import Path
from edgekd.data.folder import load_image_folder
from edgekd.data.store import as_tensor
from edgekd.distill.trainer import train
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
torch.set_num_threads(2)
ds = load_image_folder(Path(sys.argv[1]), image_size=64, seed=0, val_fraction=0.2, max_per_class=int(sys.argv[2]))
tensor = as_tensor(ds.x_train).clone()
mean, std = ds.channel_stats()
rows = []
for rnd in range(int(sys.argv[3])):
    for name, x, workers in (("float32 tensor in memory", tensor, "0"), ("image cache, read in the training process",
                             ds.x_train, "0"), ("image cache, 1 reader process", ds.x_train, "1")):
        os.environ["EDGEKD_DATA_WORKERS"] = workers
        m = build_model(ArchSpec(width=0.25, depth=1), 3, len(ds.classes), mean, std)
        h = train(m, x, ds.y_train, epochs=1, batch_size=64, lr=1e-3, seed=0)
        rows.append({"round": rnd, "loader": name, "epoch_s": h.epoch_seconds[0], "load1": os.getloadavg()[0]})
print(json.dumps({"rows": rows, "train": len(ds.y_train)}))
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


def run(folder: Path | None, size: int, pythonpath: Path, cache: Path, script: str = CHILD, *extra: str) -> dict:
    """`script` in a fresh process (this checkout or the before worktree on PYTHONPATH); EDGEKD_DATA_WORKERS
    unset, so the default of the code under test applies."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DATA_WORKERS"}
    env.update({"PYTHONPATH": str(pythonpath), "EDGEKD_CACHE_DIR": str(cache)})
    t0 = time.perf_counter()
    args = [str(a) for a in (folder, size) if a is not None] if script is CHILD else []
    proc = subprocess.run([sys.executable, "-c", script, *args, *extra], capture_output=True, text=True, env=env,
                          cwd=pythonpath)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "wall_s": time.perf_counter() - t0}


def optimize(folder: Path, pythonpath: Path, cache: Path, out: Path) -> dict:
    """`edgekd optimize --preset smoke` on every image of `folder` at 64 px: peak RSS of the process
    tree's largest process (RUSAGE_CHILDREN in a wrapper), wall time, and the stage times it reports."""
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text("max_samples_per_class: 1000000\nteacher_epochs: 1\nstudent_epochs: 1\nexport_formats: [onnx]\n")
    wrapper = ("import resource, subprocess, sys, json, time; t0 = time.perf_counter(); "
               "rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
               "print(json.dumps({'rc': rc, 'wall_s': time.perf_counter() - t0, "
               "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")
    cli = [sys.executable, "-c", "from edgekd.cli import main; main()", "optimize", "--preset", "smoke", "--data",
           str(folder), "--image-size", "64", "--config", str(cfg), "--out", str(out), "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DATA_WORKERS"}
    env.update({"PYTHONPATH": str(pythonpath), "EDGEKD_CACHE_DIR": str(cache)})
    proc = subprocess.run([sys.executable, "-c", wrapper, *cli], capture_output=True, text=True, env=env,
                          cwd=pythonpath)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if r["rc"] != 0:
        raise SystemExit(f"optimize failed ({r['rc']}): {proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {**r, "stages_s": report["stage_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-rev", default="621a9f2")
    ap.add_argument("--eurosat", type=int, default=27000)
    ap.add_argument("--resisc", type=int, default=3000)
    ap.add_argument("--epoch-images", type=int, default=800, help="per class, for the interleaved epoch comparison")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved epoch comparison")
    ap.add_argument("--optimize", action="store_true", help="also run optimize --preset smoke before and after")
    ap.add_argument("--only-epochs", action="store_true",
                    help="run only the interleaved epoch comparison and update it in the recorded results")
    args = ap.parse_args()
    if args.only_epochs:
        return only_epochs(args)
    work = Path(tempfile.mkdtemp(prefix="edgekd-scale-"))
    before = work / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before_rev], check=True,
                   capture_output=True)
    out: dict = {"rows": [], "floor": [], "epochs": [], "optimize": []}
    try:
        folders = {}
        for name, n, size in (("EuroSAT-sized", args.eurosat, 64), ("RESISC45-like", args.resisc, 256)):
            t0 = time.perf_counter()
            folders[name] = folder = generate(work / name, n, size)
            print(f"{name}: {n} tiles at {size} px generated in {time.perf_counter() - t0:.0f} s", flush=True)
            cache = work / f"cache-{name}"
            for label, path in (("before (float32 in memory)", before), ("image cache, first run", REPO),
                                ("image cache, second run", REPO)):
                r = run(folder, size, path, cache)
                out["rows"].append({"data": name, "images": n, "size": size, "loader": label, **r,
                                    "load1": os.getloadavg()[0]})
                print(out["rows"][-1], flush=True)
            out["floor"].append({"data": name, "size": size, **run(None, size, REPO, cache, FLOOR, str(size))})
            print(out["floor"][-1], flush=True)
        e = run(None, 64, REPO, work / "cache-EuroSAT-sized", EPOCHS, str(folders["EuroSAT-sized"]),
                str(args.epoch_images), str(args.rounds))
        out["epochs"], out["epoch_train_images"] = e["rows"], e["train"]
        print(out["epochs"], flush=True)
        if args.optimize:
            for label, path, cache in (("before (float32 in memory)", before, work / "opt-cache-before"),
                                       ("image cache, first run", REPO, work / "opt-cache"),
                                       ("image cache, second run", REPO, work / "opt-cache")):
                r = optimize(folders["EuroSAT-sized"], path, cache, work / f"opt-{len(out['optimize'])}")
                out["optimize"].append({"loader": label, **r, "load1": os.getloadavg()[0]})
                print(out["optimize"][-1], flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    record(out, args)


def only_epochs(args: argparse.Namespace) -> None:
    """The interleaved epoch comparison alone (on a quiet machine), merged into the recorded results."""
    work = Path(tempfile.mkdtemp(prefix="edgekd-scale-"))
    folder = generate(work / "EuroSAT-sized", args.eurosat, 64)
    e = run(None, 64, REPO, work / "cache", EPOCHS, str(folder), str(args.epoch_images), str(args.rounds))
    out = json.loads((RESULTS / "data_scale.json").read_text())
    out.update({"epochs": e["rows"], "epoch_train_images": e["train"]})
    print(out["epochs"], flush=True)
    args.optimize = bool(out.get("optimize"))
    record(out, args)


def record(out: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_scale.json").write_text(json.dumps({**out, "before_rev": args.before_rev, "source": "measured",
                                                          "cpus": os.cpu_count()}, indent=1))
    rows = out["rows"]
    lines = ["# Data at scale: the image cache vs the float32 in-memory loader (measured)", "",
             "Each row is a fresh process: load the folder (80/20 split), per-band statistics, one epoch of an "
             "EdgeNet w0.25-d1 student (batch 64, 2 threads, the data-worker default of the code under test), "
             f"predictions on the validation split. 'before' is the loader of commit {args.before_rev} (every image "
             "decoded into one float32 array). Peak RSS from getrusage (the training process; 'largest child' is "
             "its largest child process: a data reader, or a helper the libraries start); load average at each "
             "row.", "",
             "| data | loader | load s | epoch s | wall s | peak RSS MB | largest child MB | load1 |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['data']} ({r['images']} x {r['size']} px) | {r['loader']} | {r['load_s']:.1f} | "
              f"{r['epoch_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r.get('reader_peak_rss_mb', 0):.0f} | {r['load1']:.2f} |" for r in rows]
    lines += ["", "The floor: the same student trained on two random batches of 64 at that size in a fresh process "
              "(imports, weights, optimizer and activations; no data set):", ""]
    lines += [f"- {f['data']} ({f['size']} px): peak RSS {f['peak_rss_mb']:.0f} MB" for f in out["floor"]]
    if out["epochs"]:
        lines += ["", f"## Epoch time, interleaved in one process ({out['epoch_train_images']} training images of "
                      "64 px, w0.25-d1, batch 64, 2 threads)", "", "| round | loader | epoch s | load1 |",
                  "|---|---|---|---|"]
        lines += [f"| {r['round']} | {r['loader']} | {r['epoch_s']:.2f} | {r['load1']:.2f} |" for r in out["epochs"]]
        base = [r["epoch_s"] for r in out["epochs"] if r["loader"].startswith("float32")]
        for name in sorted({r["loader"] for r in out["epochs"]} - {"float32 tensor in memory"}):
            ratio = [r["epoch_s"] / b for r, b in zip([r for r in out["epochs"] if r["loader"] == name], base)]
            lines.append(f"\n{name} / float32 tensor, per round: " + ", ".join(f"{v:.2f}" for v in ratio))
    if out["optimize"]:
        lines += ["", "## `edgekd optimize --preset smoke` on the EuroSAT-sized folder, every image at 64 px",
                  "", "One teacher epoch and one student epoch (config), ONNX export only; each row a fresh process; "
                  "peak RSS of the largest process of the run.", "",
                  "| loader | wall s | peak RSS MB | data s | teacher s | teacher outputs s | KD training s | load1 |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in out["optimize"]:
            st = r["stages_s"]
            lines.append(f"| {r['loader']} | {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} | {st.get('data', 0):.1f} | "
                         f"{st.get('teacher', 0):.0f} | {st.get('teacher_outputs', 0):.0f} | "
                         f"{st.get('kd_training', 0):.0f} | {r['load1']:.2f} |")
    lines += ["", f"Command: `python benchmarks/data_scale.py --before-rev {args.before_rev} --eurosat {args.eurosat} "
                  f"--resisc {args.resisc} --epoch-images {args.epoch_images} --rounds {args.rounds}"
                  + (" --optimize" if args.optimize else "") + f"` on {os.cpu_count()} CPUs."]
    (RESULTS / "data_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
