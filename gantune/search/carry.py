"""Registrations made outside gantune, carried to the processes that run trials.

Ray runs each trial in a worker process of its own, which imports gantune afresh and knows nothing a user's module
registered in the search's process (a loss, a metric family, a dataset: ``gantune.plugins``). The search ships
what was registered outside the package, pickled by value, so a worker needs neither the module nor its folder on
its path (on this machine or a cluster's), and each trial registers what its process lacks before it reads its
config.
"""

from __future__ import annotations

import sys

from ray import cloudpickle

from gantune.errors import ConfigError
from gantune.events import first_line
from gantune.registry import Registry


def pack() -> bytes | None:
    """What was registered outside gantune, pickled for the trials' processes (``None``: nothing was). The
    registering modules are pickled by value: a worker may have neither them nor their folder."""
    found = {kind: registry.outside() for kind, registry in Registry.ALL.items() if registry.outside()}
    if not found:
        return None
    names = {module for entries in found.values() for module, _ in entries.values()}
    by_value = [sys.modules[m] for m in names if m in sys.modules and m != "__main__"]
    for module in by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        for kind, entries in found.items():
            for name, (origin, entry) in entries.items():
                try:
                    cloudpickle.dumps(entry)
                except Exception as err:
                    raise ConfigError(f"{kind} {name!r} (registered by {origin}) cannot be sent to the processes "
                                      f"that run trials: {type(err).__name__}: {first_line(err)}") from None
        return bytes(cloudpickle.dumps({kind: {name: entry for name, (_, entry) in entries.items()}
                                        for kind, entries in found.items()}))
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)


def unpack(blob: bytes | None) -> None:
    """Register, in this process, what ``pack`` carried and it lacks (a reused worker has them already)."""
    if blob is None:
        return
    for kind, entries in cloudpickle.loads(blob).items():
        registry = Registry.ALL.get(kind)
        for name, entry in entries.items():
            if registry is not None and name not in registry:
                registry.add(name, entry)
