"""Pareto front of candidates (pure)."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates; every objective is minimised
    (negate the ones to maximise). A point dominates another when it is no worse in every
    objective and better in at least one."""
    front = []
    for i, p in enumerate(points):
        dominated = any(all(q[k] <= p[k] for k in range(len(p))) and any(q[k] < p[k] for k in range(len(p)))
                        for j, q in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front
