"""Benchmark: distillation methods and the hardware-aware search, on the demo set.

1. KD vs no KD: the same student, epochs and seeds (3 seeds), response KD vs cross-entropy only.
2. Each KD method alone and a combination, the same student and seed.
3. Hardware-aware vs naive at a fixed budget, from the measured candidates of an optimize run:
   edgekd's selection vs (a) the largest student under a parameter limit, (b) the most accurate.
4. Search efficiency: training time spent on students that end up over the budget, TPE search
   with and without screening (same proposals: same seed).
5. Teacher outputs: KD epoch time with the memory-mapped cache vs a live teacher (one run),
   and the effect of caching 4 augmented views instead of 1 on accuracy.

Run:  python benchmarks/distill_search.py --run RUN_DIR   (a default-preset optimize run: its teacher)
Records benchmarks/results/distill_search.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgekd.config import build_config
from edgekd.data import load_dataset
from edgekd.data.synthetic import generate_tiles
from edgekd.distill.losses import KDSettings
from edgekd.distill.teacher import LiveTeacher, TeacherOutputs
from edgekd.distill.trainer import Unlabeled, evaluate, predict_logits, train
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.io import load_checkpoint
from edgekd.pipeline import run_optimize
from edgekd.search.objective import Scored, select

RESULTS = Path(__file__).parent / "results"
HEADLINE = ArchSpec(width=0.5, depth=1)
EPOCHS = 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--budget-ms", type=float, default=0.1, help="p90 budget for part 3")
    ap.add_argument("--search-budget-ms", type=float, default=0.15, help="p90 budget for part 4")
    args = ap.parse_args()
    report = json.loads((args.run / "report.json").read_text())
    cfg = build_config({"preset": "default"})
    ds = load_dataset(None, seed=0, val_fraction=cfg.val_fraction, image_size=None, samples_per_class=300,
                      max_samples_per_class=None)
    mean, std = ds.channel_stats()
    teacher, _ = load_checkpoint(args.run / "teacher.pt")
    work = Path(tempfile.mkdtemp(prefix="edgekd-distill-bench-"))
    out = TeacherOutputs.build(work, [teacher], ds.x_train, features=True, embedding=True)

    def fit(terms=None, seed=0, teacher_src=out, extra=None, **kw) -> tuple[float, float]:
        torch.manual_seed(seed)
        m = build_model(HEADLINE, ds.in_channels, len(ds.classes), mean, std)
        t0 = time.perf_counter()
        train(m, ds.x_train, ds.y_train, epochs=EPOCHS, batch_size=64, lr=3e-3, seed=seed, teacher=teacher_src,
              terms=terms, teacher_channels=teacher.stage_channels, **(extra or {}), **kw)
        return evaluate(predict_logits(m, ds.x_val), ds.y_val)["accuracy"], time.perf_counter() - t0

    # 1. KD vs no KD, 3 seeds
    kd_vs = {"kd": [], "no_kd": []}
    for seed in (0, 1, 2):
        kd_vs["kd"].append(fit([("response", 1.0)], seed)[0])
        kd_vs["no_kd"].append(fit([("response", 1.0)], seed, kd=KDSettings(alpha=1.0))[0])
        print("seed", seed, kd_vs["kd"][-1], kd_vs["no_kd"][-1])

    # 2. each method alone, and a combination (seed 0)
    selected = next(c for c in report["candidates"] if c["name"] == report["selected"])
    second, _ = load_checkpoint(args.run / selected["checkpoint"])  # report paths are relative to the run
    multi = TeacherOutputs.build(work, [teacher, second], ds.x_train)
    x_unl = torch.from_numpy(generate_tiles(100, ds.image_size, seed=99)[0])  # unlabelled tiles, another seed
    unl = Unlabeled(x_unl, TeacherOutputs.build(work, [teacher], x_unl))
    methods = {
        "no KD (cross-entropy)": fit([("response", 1.0)], kd=KDSettings(alpha=1.0))[0],
        "response": kd_vs["kd"][0],
        "feature": fit([("response", 1.0), ("feature", 1.0)])[0],
        "relation": fit([("response", 1.0), ("relation", 1.0)])[0],
        "robust": fit([("robust", 1.0)])[0],
        "multi-teacher (teacher + selected student)": fit([("multi-teacher", 1.0)], teacher_src=multi,
                                                          kd=KDSettings(teacher_weights=(0.7, 0.3)))[0],
        "semi-supervised (+700 unlabelled tiles)": fit([("semi-supervised", 1.0)], extra={"unlabeled": unl})[0],
        "response + feature:0.5 + relation:0.5": fit([("response", 1.0), ("feature", 0.5), ("relation", 0.5)])[0],
    }
    print(methods)

    # 5. teacher outputs: cache vs live (same student, 2 epochs, back to back), and 4 views
    live_t = time.perf_counter()
    torch.manual_seed(0)
    m = build_model(HEADLINE, ds.in_channels, len(ds.classes), mean, std)
    train(m, ds.x_train, ds.y_train, epochs=2, batch_size=64, lr=3e-3, seed=0, teacher=LiveTeacher([teacher]))
    live_s = time.perf_counter() - live_t
    cached_t = time.perf_counter()
    torch.manual_seed(0)
    m = build_model(HEADLINE, ds.in_channels, len(ds.classes), mean, std)
    train(m, ds.x_train, ds.y_train, epochs=2, batch_size=64, lr=3e-3, seed=0, teacher=out)
    cached_s = time.perf_counter() - cached_t
    t0 = time.perf_counter()
    out4 = TeacherOutputs.build(work, [teacher], ds.x_train, views=4)
    build4_s = time.perf_counter() - t0
    views = {"1 view": statistics.mean(kd_vs["kd"]),
             "4 views": statistics.mean(fit([("response", 1.0)], s, teacher_src=out4)[0] for s in (0, 1, 2))}

    # 3. hardware-aware vs naive at a fixed budget, on the run's measured candidates
    cands = report["candidates"]
    b = args.budget_ms
    p90 = {c["name"]: c["measurement"]["latency_ms"]["p90"] for c in cands}
    sel, reason = select([Scored(c["name"], c["objective"] - c["penalty"] + (10.0 if p90[c["name"]] > b else 0.0),
                                 p90[c["name"]] <= b, p90[c["name"]]) for c in cands], b)
    by = {c["name"]: c for c in cands}
    param_limit = 25_000
    largest = max((c for c in cands if c["params"] <= param_limit), key=lambda c: c["params"])
    most_acc = max(cands, key=lambda c: c["val_accuracy"])
    hw = {label: {"name": c["name"], "params": c["params"], "val_accuracy": c["val_accuracy"],
                  "p90_ms": p90[c["name"]], "meets_budget": p90[c["name"]] <= b}
          for label, c in (("edgekd (argmin J, budget first)", by[sel]),
                           (f"largest by parameters (<= {param_limit:,})", largest),
                           ("most accurate, budget ignored", most_acc))}

    # 4. search efficiency: TPE with and without screening, same seed and proposals
    eff = {}
    for screen in (True, False):
        run_dir = work / f"search-{screen}"
        scfg = build_config({"preset": "smoke", "out": run_dir, "quiet": True, "no_cache": True,
                             "budget_ms": args.search_budget_ms,
                             "seed": 0}, None).model_copy(update={
            "search": "tpe", "trials": 12, "bracket_size": 6, "rungs": 2, "student_epochs": 2, "screen": screen,
            "samples_per_class": 100, "max_samples_per_class": 100,
            "search_space": cfg.search_space.model_copy(update={
                "widths": [0.25, 0.5, 1.0, 2.0], "stage_depths": [1, 2, 3], "expansions": [2, 4, 6]})})
        t0 = time.perf_counter()
        run_optimize(scfg)
        r = json.loads((run_dir / "report.json").read_text())
        eff["with screening" if screen else "without screening"] = {
            "wall_s": round(time.perf_counter() - t0, 1), "proposals": r["search"]["proposals"],
            "screened_out": r["search"]["screened_out"], "train_s_total": r["search"]["train_seconds_total"],
            "train_s_on_over_budget_students": r["search"]["train_seconds_on_over_budget_students"],
            "selected": r["selected"], "selected_meets_budget": next(
                c["meets_budget"] for c in r["candidates"] if c["name"] == r["selected"])}
        print(eff)

    result = {"benchmark": "distill_search", "command": f"python benchmarks/distill_search.py --run {args.run}",
              "conditions": {"data": "edgekd demo set, 300 tiles/class, 32x32, seed 0 split (1680/420)",
                             "student": HEADLINE.name, "epochs": EPOCHS, "teacher": report["teacher"]["name"],
                             "teacher_val_accuracy": report["teacher"]["val_accuracy"], "budget_ms": b,
                             "search_budget_ms": args.search_budget_ms,
                             "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
              "kd_vs_no_kd": kd_vs, "methods": methods, "hardware_aware_vs_naive": hw, "selection_reason": reason,
              "search_efficiency": eff,
              "teacher_outputs": {"kd_2_epochs_cached_s": round(cached_s, 2), "kd_2_epochs_live_s": round(live_s, 2),
                                  "speedup": round(live_s / cached_s, 2), "build_4_views_s": round(build4_s, 2),
                                  "accuracy_by_views_mean_of_3_seeds": views}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distill_search.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "distill_search.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    c = r["conditions"]
    kd, no = r["kd_vs_no_kd"]["kd"], r["kd_vs_no_kd"]["no_kd"]
    lines = ["# Distillation methods and the hardware-aware search", "",
             f"Command: `{r['command']}`. {c['data']}; student {c['student']}, {c['epochs']} epochs; teacher "
             f"{c['teacher']} (val accuracy {c['teacher_val_accuracy']:.3f}). Load average at the end "
             f"{c['load_average_at_end']}.", "",
             "## 1. KD vs no KD (3 seeds)", "",
             "| | seed 0 | seed 1 | seed 2 | mean |", "|---|---|---|---|---|",
             "| response KD | " + " | ".join(f"{v:.3f}" for v in kd) + f" | {statistics.mean(kd):.3f} |",
             "| no KD | " + " | ".join(f"{v:.3f}" for v in no) + f" | {statistics.mean(no):.3f} |", "",
             "## 2. KD methods (seed 0)", "", "| method | val accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["methods"].items()]
    lines += ["", f"## 3. Hardware-aware vs naive (p90 budget {c['budget_ms']} ms, measured candidates)", "",
              "| rule | student | params | val accuracy | p90 ms | meets budget |", "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['name']} | {v['params']:,} | {v['val_accuracy']:.3f} | {v['p90_ms']:.3f} | "
              f"{v['meets_budget']} |"
              for k, v in r["hardware_aware_vs_naive"].items()]
    lines += ["", f"## 4. Search efficiency (TPE, 12 proposals, 2 rungs, p90 budget {c['search_budget_ms']} ms, smoke "
                  "data)", "",
              "| | proposals | screened out | training s | training s on over-budget students | selected meets budget "
              "| wall s |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['proposals']} | {v['screened_out']} | {v['train_s_total']} | "
              f"{v['train_s_on_over_budget_students']} | "
              f"{v['selected_meets_budget']} | {v['wall_s']} |" for k, v in r["search_efficiency"].items()]
    t = r["teacher_outputs"]
    lines += ["", "## 5. Teacher outputs", "",
              f"2 KD epochs: cached {t['kd_2_epochs_cached_s']} s vs live teacher {t['kd_2_epochs_live_s']} s "
              f"(**{t['speedup']}x**). Caching 4 views took {t['build_4_views_s']} s; mean accuracy over 3 seeds: "
              + ", ".join(f"{k} {v:.3f}" for k, v in t["accuracy_by_views_mean_of_3_seeds"].items()) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
