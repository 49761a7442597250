"""The optimize loop: a plan (plan.py), its stages (stages.py), the report built from their
records (reporting.py), and `run_optimize` that strings them together (run.py)."""

from .run import run_optimize

__all__ = ["run_optimize"]
