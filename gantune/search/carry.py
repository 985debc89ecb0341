"""Registrations made outside gantune, carried to the processes that run trials.

Ray runs each trial in a worker process of its own, which imports gantune afresh and knows nothing a user's module
registered in the search's process (a loss, a metric family, a dataset: ``gantune.plugins``). The search ships
what was registered outside the package and each trial registers it before it reads its config (replacing a
built-in of the same name, as the plugin did). A registering module that is not installed is pickled by value,
so a worker needs no copy of it; what it imports from other files of its folder is found through the folder,
which is put on the worker's path where it exists (this machine; a cluster's workers need it installed or
shipped with Ray's ``runtime_env``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ray import cloudpickle

from gantune.errors import ConfigError
from gantune.events import first_line
from gantune.registry import Registry


def _installed(module: ModuleType) -> bool:
    """Whether ``module`` comes from an installed package (a worker imports it as the driver did)."""
    parts = Path(getattr(module, "__file__", None) or "").parts
    return "site-packages" in parts or "dist-packages" in parts


def pack(text: str | None = None) -> tuple[bytes | None, list[str]]:
    """What was registered outside gantune, pickled for the trials' processes (``None``: nothing was), with the
    folders of the modules that registered it; and a note for each registration left out.

    ``text`` is the space's YAML. A registration that does not pickle stops the search (``ConfigError`` naming it)
    where a trial may use it: ``text`` names it, it replaces one of gantune's own, or no ``text`` is given. One the
    space never names is left out with a note: a plugin loaded for every command (``$GANTUNE_PLUGINS``, an entry
    point) must not stop the searches that do not use it.
    """
    found = {kind: registry.outside() for kind, registry in Registry.ALL.items() if registry.outside()}
    if not found:
        return None, []
    modules = [sys.modules[m] for m in {m for entries in found.values() for m, _ in entries.values()}
               if m in sys.modules]
    by_value = [m for m in modules if m.__name__ != "__main__" and not _installed(m)]
    folders = sorted({str(Path(f).resolve().parent) for m in modules if (f := getattr(m, "__file__", None))})
    for module in by_value:
        cloudpickle.register_pickle_by_value(module)
    notes: list[str] = []
    try:
        try:
            inner = _dumps(found)
        except Exception as err:
            notes = _leave_out(found, text)  # one by one, only now: each entry was pickled twice on every start
            if not notes:
                raise ConfigError(f"what plugins registered cannot be sent to the processes that run trials: "
                                  f"{type(err).__name__}: {first_line(err)}") from None
            if not any(found.values()):
                return None, notes
            inner = _dumps(found)
        return bytes(cloudpickle.dumps((folders, inner))), notes
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)


def _dumps(found: dict[str, dict[str, tuple[str, Any]]]) -> bytes:
    return bytes(cloudpickle.dumps({kind: {name: entry for name, (_, entry) in entries.items()}
                                    for kind, entries in found.items()}))


def _leave_out(found: dict[str, dict[str, tuple[str, Any]]], text: str | None) -> list[str]:
    """Remove from ``found`` each registration that does not pickle and that no trial of the space ``text`` can
    use, and say so, one note each; a ``ConfigError`` naming the first that does not pickle and may be used."""
    notes = []
    for kind, entries in found.items():
        for name, (origin, entry) in list(entries.items()):
            try:
                cloudpickle.dumps(entry)
                continue
            except Exception as err:
                why = f"{type(err).__name__}: {first_line(err)}"
            if text is None or Registry.ALL[kind].replaces(name) or _named(name, text):
                raise ConfigError(f"{kind} {name!r} (registered by {origin}) cannot be sent to the processes "
                                  f"that run trials: {why}")
            del entries[name]
            notes.append(f"{kind} {name!r} (registered by {origin}) is left out of the trials: the space does not "
                         f"name it and it cannot be sent to the processes that run them ({why})")
    return notes


def _named(name: str, text: str) -> bool:
    """Whether the YAML ``text`` holds ``name`` as a word of its own (a value, a choice, in an expression)."""
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", text) is not None


def unpack(blob: bytes | None) -> None:
    """Register, in this process, what ``pack`` carried (a plugin's replacement of a built-in replaces it here too;
    a reused worker registers it again, the same). Raises ``ConfigError`` in one line where it cannot be loaded."""
    if blob is None:
        return
    folders, inner = cloudpickle.loads(blob)
    sys.path.extend(f for f in folders if f not in sys.path and Path(f).is_dir())  # after the rest, as the driver
    try:
        carried = cloudpickle.loads(inner)
    except Exception as err:
        raise ConfigError(f"what the search's plugins registered cannot be loaded in this trial's process "
                          f"({type(err).__name__}: {first_line(err)}): install the module it imports where the "
                          "trials run") from None
    for kind, entries in carried.items():
        registry = Registry.ALL.get(kind)
        for name, entry in entries.items():
            if registry is None:
                continue
            if name in registry:
                registry.remove(name)
            registry.add(name, entry)
