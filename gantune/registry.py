"""A named table of builders: how losses, norms, datasets and metrics are chosen by name.

Registries replace ``if name == ...`` chains: adding a loss is one ``register`` call, and an unknown
name gets an error that lists what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gantune.errors import GantuneError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Unregister ``name`` (a plugin's tests clean up after themselves)."""
        del self._entries[name]

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise GantuneError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def validate(self, name: str) -> str:
        """``name`` if registered, else ``ValueError`` listing the names (for pydantic validators)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return name

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
