"""A small name -> implementation registry, so that plug-ins are found by name, not by if-chains.

Entries are named, documented functions or classes, registered with a decorator that may carry
metadata (`@KD_LOSSES.register("robust", needs=frozenset())`). An unknown name fails with the
close matches and every choice; a name registered twice fails naming both places."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def close_matches(name: str, choices: Iterable[str]) -> str:
    """" did you mean 'x'?" for the closest choice, or "" when none is close."""
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"did you mean {found[0]!r}? " if found else ""


def _where(obj: object) -> str:
    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"  # type: ignore[arg-type]
    except (TypeError, OSError):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


class Registry(Generic[T]):
    """Maps names to implementations and their metadata; `register` is used as a decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice: at {_where(self._items[name])} "
                                 f"and at {_where(obj)}")
            self._items[name] = obj
            self._meta[name] = meta
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; {close_matches(name, self._items)}"
                              f"choose one of: {known}") from None

    def meta(self, name: str) -> dict[str, Any]:
        """The keywords `name` was registered with."""
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
