"""report.md: the facts of report.json as Markdown tables."""

from __future__ import annotations

from typing import Any


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _conditions(m: dict[str, Any]) -> str:
    lat = m["latency_ms"]
    return (f"{m['runtime']} {m['runtime_version']} on {m['device']}, {m['precision']}, batch {m['batch']}, "
            f"input {'x'.join(map(str, m['input_shape']))}, {m['threads']} threads, "
            f"{lat['warmup']} warm-up + {lat['n']} timed runs")


def render_markdown(r: dict[str, Any]) -> str:
    ds, teacher, sel = r["dataset"], r["teacher"], r["selected"]
    cands = r["candidates"]
    best = next(c for c in cands if c["name"] == sel)
    tm = teacher["measurement"]
    bm = best["measurement"]
    speedup = tm["latency_ms"]["p50"] / bm["latency_ms"]["p50"] if bm["latency_ms"]["p50"] > 0 else None
    out = [f"# edgekd report — {r['target']['name']}, budget {r['budget_ms']:g} ms", ""]
    mode = r.get("measurement", {}).get("mode", "measured")
    if mode == "predicted":
        out += [f"> **Latency, memory and energy are PREDICTED, not measured.** {r['measurement']['how']}.", ""]
    elif mode == "remote":
        out += [f"> Figures measured on the device: {r['measurement']['how']}.", ""]
    if ds["synthetic"]:
        out += [f"> **Data set: synthetic.** {ds['source']}. Accuracy figures describe this generated data, "
                "not real imagery.", ""]
    out += [
        "## Summary", "",
        _table(["", ""], [
            ["target", f"{r['target']['name']} ({r['target']['device_class']})"],
            ["budget (p90)", f"{r['budget_ms']:g} ms ({r['budget_source']})"],
            ["selected student", f"**{sel}** — {r['selection_reason']}"],
            ["accuracy (val)", f"{best['val_accuracy']:.3f} student vs {teacher['val_accuracy']:.3f} teacher"],
            ["latency p50 / p90", f"{bm['latency_ms']['p50']:.3f} / {bm['latency_ms']['p90']:.3f} ms "
                                  f"(teacher {tm['latency_ms']['p50']:.3f} / {tm['latency_ms']['p90']:.3f} ms)"],
            ["speed-up vs teacher (p50)", _f(speedup, 2) + "x"],
            ["budget met", "yes" if best["meets_budget"] else "**no**"],
            ["energy / inference", f"{_f(bm['energy_mj'], 4)} mJ ({bm['source'].get('energy', 'not measured')})"],
            ["data set", f"{ds['name']} ({'synthetic' if ds['synthetic'] else 'real'}), "
                         f"{len(ds['classes'])} classes, {ds['sizes']['train']} train / {ds['sizes']['val']} val"],
        ]), "",
        f"Measurement conditions: {_conditions(bm)}.", "",
        "## Candidates", "",
        f"J = L_KD,val + {r['objective']['lambda']:g}·C_hw + P_rt + {r['objective']['delta']:g}·energy_mJ; "
        f"C_hw weights {r['objective']['weights']} relative to the teacher; "
        f"P_rt = {r['objective']['gamma']:g} when p90 > {r['budget_ms']:g} ms.", "",
        _table(
            ["candidate", "params", "MMACs", "val acc", "val KD loss", "p50 ms", "p90 ms", "p99 ms", "n",
             "peak MB", "size MB", "energy mJ", "C_hw", "P_rt", "J", "sources"],
            [[("**" + c["name"] + "**") if c["name"] == sel else c["name"], f"{c['params']:,}",
              f"{c['macs'] / 1e6:.2f}", _f(c["val_accuracy"]), _f(c["val_kd_loss"]),
              _f(c["measurement"]["latency_ms"]["p50"]), _f(c["measurement"]["latency_ms"]["p90"]),
              _f(c["measurement"]["latency_ms"]["p99"]), str(c["measurement"]["latency_ms"]["n"]),
              _f(c["measurement"]["peak_memory_mb"], 2), _f(c["measurement"]["model_size_mb"], 3),
              _f(c["measurement"]["energy_mj"], 4), _f(c["c_hw"]), _f(c["penalty"], 1), _f(c["objective"]),
              ", ".join(f"{k}: {v}" for k, v in c["measurement"]["source"].items())]
             for c in sorted(cands, key=lambda c: c["objective"])],
        ), "",
    ]
    if "search" in r:
        se = r["search"]
        out += [
            "## Search", "",
            f"Mode {se['mode']}, rungs at {se['rung_epochs']} epochs (eta {se['eta']}); {se['proposals']} proposals, "
            f"{se['screened_out']} screened out before training; {se['train_seconds_total']:.1f} s of KD training, "
            f"{se['train_seconds_on_over_budget_students']:.1f} s of it on students that ended over the budget. "
            f"Pareto front (accuracy, p90, energy): {', '.join(r.get('pareto_front', [])) or '–'}.", "",
            _table(["trial", "precision", "status", "screen p90 ms", "rungs (epochs: val acc, J)"],
                   [[t["name"], t["precision"], t["status"],
                     _f(t["screen"]["p90_ms"]) if t.get("screen") else "–",
                     "; ".join(f"{g['epochs']}: {g['val_accuracy']:.3f}, {g['objective']:.3f}" for g in t["rungs"]) or "–"]
                    for t in r.get("trials", [])]), "",
        ]
    out += [
        "## Teacher", "",
        f"{teacher['name']} ({teacher['origin']}): {teacher['params']:,} params, {teacher['macs'] / 1e6:.2f} MMACs, "
        f"val accuracy {teacher['val_accuracy']:.3f}; p50 {tm['latency_ms']['p50']:.3f} ms, "
        f"p90 {tm['latency_ms']['p90']:.3f} ms, peak memory {_f(tm['peak_memory_mb'], 2)} MB, "
        f"energy {_f(tm['energy_mj'], 4)} mJ ({tm['source'].get('energy', 'not measured')}).", "",
    ]
    notes = sorted({n for c in cands for n in c["measurement"]["notes"]} | set(tm["notes"]))
    if notes:
        out += ["Notes: " + " ".join(notes), ""]
    out += [
        "## Exports of the selected student", "",
        _table(["format", "file", "size MB", "top-1 agreement", "accuracy Δ", "max |Δlogit|", "mean |Δlogit|"],
               [[e["format"], f"`{e['path']}`", _f(e["size_mb"], 3), _f(e["parity"]["top1_agreement"], 4),
                 _f(e["parity"]["accuracy_delta"], 4), f"{e['parity']['max_abs_diff']:.2e}",
                 f"{e['parity']['mean_abs_diff']:.2e}"] for e in r["exports"]]), "",
        "## Time per stage", "",
        _table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in r["stage_seconds"].items()]), "",
        "## Software", "",
        _table(["package", "version"], [[k, v] for k, v in r["software"].items()]), "",
    ]
    return "\n".join(out)
