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


def pack() -> bytes | None:
    """What was registered outside gantune, pickled for the trials' processes (``None``: nothing was), with the
    folders of the modules that registered it."""
    found = {kind: registry.outside() for kind, registry in Registry.ALL.items() if registry.outside()}
    if not found:
        return None
    modules = [sys.modules[m] for m in {m for entries in found.values() for m, _ in entries.values()}
               if m in sys.modules]
    by_value = [m for m in modules if m.__name__ != "__main__" and not _installed(m)]
    folders = sorted({str(Path(f).resolve().parent) for m in modules if (f := getattr(m, "__file__", None))})
    for module in by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        try:
            inner = cloudpickle.dumps({kind: {name: entry for name, (_, entry) in entries.items()}
                                       for kind, entries in found.items()})
        except Exception as err:
            _name_unpicklable(found)  # one by one, only now: each entry was pickled twice on every search start
            raise ConfigError(f"what plugins registered cannot be sent to the processes that run trials: "
                              f"{type(err).__name__}: {first_line(err)}") from None
        return bytes(cloudpickle.dumps((folders, inner)))
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)


def _name_unpicklable(found: dict[str, dict[str, tuple[str, Any]]]) -> None:
    """A ``ConfigError`` naming the first registration that does not pickle, with where it was registered."""
    for kind, entries in found.items():
        for name, (origin, entry) in entries.items():
            try:
                cloudpickle.dumps(entry)
            except Exception as err:
                raise ConfigError(f"{kind} {name!r} (registered by {origin}) cannot be sent to the processes "
                                  f"that run trials: {type(err).__name__}: {first_line(err)}") from None


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
