"""--baseline: the selected architecture trained once more without KD, so the report can say
what distillation added. Everything but the loss is the selected student's: the start (scratch
or the same pretrained weights), the rungs' epochs and seeds (so the same data order and
learning-rate schedule), and the validation at the selected precision."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..console import ConsoleObserver
from ..convert.onnx import to_onnx
from ..files import atomic_write
from ..report.model import Baseline
from .plan import RunPlan, StageTimer
from .stages import SearchResult, Selection


def baseline_stage(plan: RunPlan, search: SearchResult, choice: Selection, observer: ConsoleObserver,
                   timer: StageTimer) -> Baseline | None:
    """None without --baseline; a finished baseline of a resumed run is read back."""
    if not plan.cfg.baseline:
        return None
    best = choice.best
    folder = plan.run_dir / "baseline"
    done = folder / f"{best.name}.json"
    if done.exists():
        return Baseline.model_validate_json(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    # response loss at alpha 1 is cross-entropy alone; every other term is dropped
    no_kd = dataclasses.replace(search.trainer, terms=[("response", 1.0)],
                                kd=dataclasses.replace(search.trainer.kd, alpha=1.0))
    model, _ = no_kd.build(best.arch)
    epochs = search.rung_epochs[:best.rung + 1]
    observer.say(f"baseline: {best.arch.name} without KD for {epochs[-1]} epochs (--no-baseline skips it)")
    with timer("baseline"):
        seconds = 0.0
        for rung, (before, total) in enumerate(zip([0, *epochs], epochs)):
            label = f"no-KD {best.arch.name} r{rung}"
            observer.on_rung_start(label, no_kd.steps(total - before), "baseline")
            t0 = timer.total()
            no_kd.train(model, total - before, plan.cfg.seed + rung, observer.on_step,
                        _epoch_reporter(observer, label, total - before))
            seconds += timer.total() - t0
            observer.on_rung_end(label)
        onnx_path = folder / f"{best.arch.name}.onnx"
        to_onnx(model, onnx_path, plan.input_shape)
        val, _ = no_kd.validate(model, onnx_path, best.precision)
    result = Baseline(name=best.name, epochs=epochs[-1], kd_accuracy=best.val_accuracy, no_kd_accuracy=val.accuracy,
                      kd_gain_points=round(100 * (best.val_accuracy - val.accuracy), 2),
                      train_seconds=round(seconds, 3))
    atomic_write(done, result.model_dump_json())
    observer.say(f"baseline: {best.name} {best.val_accuracy:.3f} with KD, {val.accuracy:.3f} without "
                 f"({result.kd_gain_points:+.2f} points)")
    return result


def _epoch_reporter(observer: ConsoleObserver, label: str, epochs: int) -> Callable[[int, float], None]:
    return lambda epoch, loss: observer.on_epoch(label, epoch, epochs, loss)
