"""A name -> factory registry (timm-style): variants are registrations, not if/elif chains."""
from __future__ import annotations

import fnmatch
import functools
from typing import Any, Callable, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, /, **bound: Any):
        """Register ``obj`` under ``name``; as a decorator when ``obj`` is omitted.

        Keyword arguments bind parameters: ``register("convnet_d4", ConvNet, depth=4)``.
        """
        key = name.lower()

        def deco(o: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[key] = functools.partial(o, **bound) if bound else o  # type: ignore[assignment]
            return o

        return deco(obj) if obj is not None else deco

    def get(self, name: str) -> T:
        key = name.lower()
        if key not in self._items:
            known = ", ".join(self.names())
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._items[key]

    def create(self, name: str, /, **kw: Any) -> Any:
        return self.get(name)(**kw)  # type: ignore[operator]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._items

    def __iter__(self):
        return iter(self.names())
