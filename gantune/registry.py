"""A named table of builders: how losses, norms, datasets and metrics are chosen by name.

Registries replace ``if name == ...`` chains: adding a loss is one ``register`` call, and an unknown
name gets an error that lists what exists.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import ClassVar, Generic, TypeVar

from gantune.errors import GantuneError

T = TypeVar("T")


def plugin_hint(text: str) -> str:
    """``text``, an error of a command, with a hint where it names an entry no registry holds (``unknown loss
    'x'``, ``unknown metric 'x'``): what a plugin registered is unknown to a command run without that plugin (an
    export, a resume, a train of an exported config). Said once; an unknown key is no plugin's."""
    kinds = "|".join(re.escape(kind) for kind in Registry.ALL)
    if "registered by a plugin?" in text or not re.search(rf"\bunknown (?:{kinds}) '", text):
        return text
    return f"{text} (registered by a plugin? give it: gantune --plugin FILE_OR_MODULE ...)"


class Registry(Generic[T]):
    """Maps names to entries, in registration order."""

    #: every registry, by kind: what ``gantune.plugins`` carries to the processes that run trials
    ALL: ClassVar[dict[str, Registry[object]]] = {}

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._outside: dict[str, str] = {}  # name -> the module outside gantune that registered it
        self._own: set[str] = set()  # the names gantune itself registered (a plugin may replace one)
        Registry.ALL[kind] = self  # type: ignore[assignment]

    def add(self, name: str, entry: T) -> T:
        if not isinstance(name, str) or not re.fullmatch(r"[^\s,]+", name):  # a config names it, lists show it
            raise ValueError(f"{self.kind} {name!r}: a name is a non-empty text without spaces or commas (a config "
                             "names it, and gantune's messages list the names separated by commas)")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice (to replace it, remove it first: "
                             f".remove({name!r}))")
        self._entries[name] = entry
        if (module := _registrant()) is not None:
            self._outside[name] = module
        else:
            self._own.add(name)
        return entry

    def remove(self, name: str) -> None:
        """Unregister ``name`` (a plugin's tests clean up after themselves)."""
        del self._entries[name]
        self._outside.pop(name, None)

    def outside(self) -> dict[str, tuple[str, T]]:
        """The entries registered from outside the package, by name: (the registering module, the entry)."""
        return {name: (module, self._entries[name]) for name, module in self._outside.items()}

    def replaces(self, name: str) -> bool:
        """Whether ``name`` is a plugin's entry in place of gantune's own: a process without the plugin has the
        built-in under that name, so a config that never names it still uses it."""
        return name in self._own and name in self._outside

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


def _registrant() -> str | None:
    """The module outside gantune whose code made the registration being added, else ``None`` (gantune's own,
    made as its modules are imported). The registry's helpers (``register``, ``@dataset``, ``@family``) sit
    between: frames of gantune's functions are passed over, and a gantune module's top level ends the search."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        spec = frame.f_globals.get("__spec__")  # ``python -m gantune.cli`` runs as __main__: its spec names it
        module = str(getattr(spec, "name", None) or frame.f_globals.get("__name__", ""))
        if module.split(".")[0] != "gantune":
            return module
        if frame.f_code.co_name == "<module>":
            return None
        frame = frame.f_back
    return None
