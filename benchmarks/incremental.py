"""Benchmark: `edgekd update` over a three-step stream, with the history term vs plain
fine-tuning (mu = 0) vs retraining from scratch on everything (`edgekd optimize`).

The image folder is split once: 20 % of every class is a test set no step ever sees; the rest
is cut into the stream. Step 1 trains on 4 classes (the first half of their images); step 2
brings 2 new classes (the first half of theirs); step 3 brings the second half of the images of
all 6 classes. After each step every method's student is scored on the test images of the old
classes (those of step 1) and of the new ones (step 2's); the wall time of each command is
recorded (the same settings for every method: one EdgeNet student, the same epochs).

Run:  python benchmarks/incremental.py [--data ../shared/data/rsscn7-64] [--image-size 32]
Records benchmarks/results/incremental.{json,md}.
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
import torch

from edgekd.data import load_dataset
from edgekd.distill.trainer import predict_logits
from edgekd.models.io import load_checkpoint

RESULTS = Path(__file__).parent / "results"
IMAGES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


def _link(files: list[Path], root: Path) -> Path:
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        (root / f.parent.name / f.name).symlink_to(f.resolve())
    return root


def split_stream(data: Path, work: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())[:6]
    old, new = classes[:4], classes[4:6]
    parts: dict[str, list[Path]] = {k: [] for k in ("test", "step1", "step2", "step3")}
    for c in classes:
        files = sorted(f for f in (data / c).iterdir() if f.suffix.lower() in IMAGES)
        files = [files[i] for i in rng.permutation(len(files))]
        n_test = len(files) // 5
        test, rest = files[:n_test], files[n_test:]
        half = len(rest) // 2
        parts["test"] += test
        parts["step1" if c in old else "step2"] += rest[:half]
        parts["step3"] += rest[half:]
    out = {k: _link(v, work / k) for k, v in parts.items()}
    out["all2"] = _link(parts["step1"] + parts["step2"], work / "all2")
    out["all3"] = _link(parts["step1"] + parts["step2"] + parts["step3"], work / "all3")
    return {**out, "old": old, "new": new}  # type: ignore[dict-item]


def _cli(*args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgekd.cli", *args, "--quiet"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edgekd {' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - t0


def _checkpoint(run: Path) -> Path:
    if (run / "update.json").exists():
        return run / json.loads((run / "update.json").read_text())["student"]["checkpoint"]
    r = json.loads((run / "report.json").read_text())
    arch = next(c for c in r["candidates"] if c["name"] == r["selected"])["checkpoint"].split("/")[1]
    return run / "candidates" / arch / "student.pt"


def score(run: Path, test, old: list[str], new: list[str]) -> dict[str, float | None]:
    """Accuracy on the test images of the old and of the new classes (a class the student lacks counts as wrong)."""
    model, meta = load_checkpoint(_checkpoint(run))
    pred = predict_logits(model, test.x_val).argmax(1)
    names = [meta["classes"][i] for i in pred.tolist()]
    truth = [test.classes[i] for i in test.y_val.tolist()]
    out: dict[str, float | None] = {}
    for label, group in (("old", old), ("new", new)):
        idx = [i for i, t in enumerate(truth) if t in group]
        out[label] = float(np.mean([names[i] == truth[i] for i in idx])) if idx else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "rsscn7-64")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--teacher-epochs", type=int, default=6)
    ap.add_argument("--update-epochs", type=int, default=12, help="epochs of each update (it sees fewer images "
                                                                    "per epoch than a retraining on everything)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekd-incremental-"))
    s = split_stream(args.data, work)
    cfg = work / "run.yaml"
    cfg.write_text(f"candidates:\n  - {{width: 0.5, depth: 1}}\nbaseline: false\nimage_size: {args.image_size}\n"
                   f"student_epochs: {args.epochs}\nteacher_epochs: {args.teacher_epochs}\nexport_formats: [onnx]\n"
                   "budget_ms: 50\nscreen: false\n")
    # the test images, labelled by folder name, as a "validation split" of 100 %
    test = load_dataset(s["test"], seed=0, val_fraction=0.999, image_size=args.image_size, samples_per_class=0,
                        max_samples_per_class=None)
    torch.set_num_threads(2)
    rows: list[dict] = []

    def record(step: int, method: str, run: Path, seconds: float) -> None:
        acc = score(run, test, s["old"], s["new"])
        rows.append({"step": step, "method": method, "old_classes": acc["old"], "new_classes": acc["new"],
                     "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)

    opt = ["optimize", "--config", str(cfg), "--no-cache"]
    t = _cli(*opt, "--data", str(s["step1"]), "--out", str(work / "r1"))
    record(1, "train (step 1)", work / "r1", t)
    upd = ["--epochs", str(args.update_epochs), "--no-cache"]
    for method, mu in (("update, history term (mu 1)", "1"), ("plain fine-tuning (mu 0)", "0")):
        tag = "h" if mu == "1" else "p"
        t = _cli("update", str(work / "r1"), "--data", str(s["step2"]), "--out", str(work / f"r2{tag}"), "--mu", mu,
                 *upd)
        record(2, method, work / f"r2{tag}", t)
        t = _cli("update", str(work / f"r2{tag}"), "--data", str(s["step3"]), "--out", str(work / f"r3{tag}"), "--mu",
                 mu, *upd)
        record(3, method, work / f"r3{tag}", t)
    for step in (2, 3):
        t = _cli(*opt, "--data", str(s[f"all{step}"]), "--out", str(work / f"retrain{step}"))
        record(step, "retrain from scratch on everything", work / f"retrain{step}", t)
    record_files(rows, args, s, test, os.getloadavg()[0])


def record_files(rows: list[dict], args: argparse.Namespace, s: dict, test, load: float) -> None:
    rec = {"data": str(args.data), "image_size": args.image_size, "epochs": args.epochs,
           "update_epochs": args.update_epochs,
           "teacher_epochs": args.teacher_epochs, "old_classes": s["old"], "new_classes": s["new"],
           "test_images": len(test.y_val), "rows": rows, "load1_at_end": load, "source": "measured"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "incremental.json").write_text(json.dumps(rec, indent=1))
    f = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["# Incremental updates over a three-step stream (measured)", "",
             f"Data: {args.data.name} at {args.image_size} px; old classes {', '.join(s['old'])} (step 1), new "
             f"classes {', '.join(s['new'])} (step 2), step 3: the second half of the images of all six. "
             f"{len(test.y_val)} held-out test images no step sees. Student EdgeNet w0.5-d1: {args.epochs} epochs for "
             f"step 1 and each retraining, {args.update_epochs} per update (an update sees its new images plus as "
             f"many replayed, a retraining everything); teacher {args.teacher_epochs} epochs (updates fine-tune it "
             "3 epochs when classes are added). "
             "Accuracy in % on the test images of the old and the new classes; wall time of the whole command "
             f"(training, measurement, export) in s, 2 training threads; load average at the end {load:.2f}.", "",
             "| step | method | old classes | new classes | wall s |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['method']} | {f(r['old_classes'])} | {f(r['new_classes'])} | {r['seconds']} |"
              for r in rows]
    lines += ["", f"Command: `python benchmarks/incremental.py --data {args.data} --image-size {args.image_size} "
                  f"--epochs {args.epochs} --teacher-epochs {args.teacher_epochs} "
                  f"--update-epochs {args.update_epochs}`."]
    (RESULTS / "incremental.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
