"""Registrations made outside gantune: loaded from the command line, and carried to the processes that run trials.

A loss, metric family, dataset or sampler registered by the user's own module lives in the process that imported
it. ``gantune --plugin FILE_OR_MODULE`` (or ``$GANTUNE_PLUGINS``, or a package's ``gantune.plugins`` entry point)
imports such a module before the command runs; a search carries what it registered to the trials' processes
(``gantune.search.carry``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from gantune.errors import ConfigError
from gantune.events import first_line

#: the entry-point group an installed package names its registering module in
ENTRY_POINTS = "gantune.plugins"
#: modules or ``.py`` files to import before a command runs, separated by ``os.pathsep``
ENV = "GANTUNE_PLUGINS"
#: the top-level names of the modules the plugins loaded are (their code, and their package's, is the user's)
_OWN: set[str] = set()


def load(specs: list[str]) -> None:
    """Import each plugin: the ``gantune.plugins`` entry points, ``$GANTUNE_PLUGINS`` and ``specs`` (``--plugin``),
    each a module name or a ``.py`` file. One that fails to import is a ``ConfigError`` naming it (exit code 2)."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        _import(f"entry point {ep.name} ({ep.value})", ep.load)
        _own(ep.value.split(":")[0])
    env = [s for s in os.environ.get(ENV, "").split(os.pathsep) if s]
    for where, spec in [*((f"${ENV}", s) for s in env), *(("--plugin", s) for s in specs)]:
        _import(f"{where} {spec}", lambda spec=spec: _module(spec))
        _own(Path(spec).stem if spec.endswith(".py") else spec)


def _own(module: str) -> None:
    """Count ``module``'s top-level package as the user's code, unless it is gantune's own (``--plugin
    gantune.x`` would have made every error of gantune's a plugin's)."""
    if (top := module.split(".")[0]) != __name__.split(".")[0]:
        _OWN.add(top)


def raised_in(err: BaseException) -> str | None:
    """Where in a loaded plugin's own code ``err`` was raised (its innermost frame there: ``file, line N, in
    fn``), else ``None``. The CLI says it in one line (exit code 2), as it does a plugin that fails to import: a
    dataset builder or metric that raised at run time ended ``gantune train`` with a traceback through gantune."""
    where = None
    tb = err.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".")[0] in _OWN:
            where = f"{Path(tb.tb_frame.f_code.co_filename).name}, line {tb.tb_lineno}, in {tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    return where


def _import(where: str, do: Any) -> None:
    try:
        do()
    except Exception as err:  # the plugin's own code: whatever it raises is its author's to read, in one line
        raise ConfigError(f"{where}: {type(err).__name__}: {first_line(err)}") from None
    except SystemExit as err:  # sys.exit(0) ended the command silently with success, having run nothing
        raise ConfigError(f"{where}: it called sys.exit({err.code!r}) while imported; a plugin only registers "
                          "(nothing ran)") from None


def _module(spec: str) -> None:
    """Import ``spec``: a ``.py`` file (under its stem's name, its folder on the path for its own imports) or a
    module name (the working directory searched after the installed modules; a module there that an installed
    one of the same name would hide is refused, as a file of that name is)."""
    if spec.endswith(".py"):
        # a link keeps its name (its target's had no .py: no loader, a bare AssertionError); ``..`` is left to the
        # file system (abspath folded ``sub/../p.py`` to ``p.py``, where ``sub`` linked to a folder elsewhere)
        given = Path.cwd() / Path(spec).expanduser()
        path = given.resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        name = given.stem
        held = sys.modules.get(name)
        if held is not None:  # loaded already (a second --plugin of it), or another module of that name
            if Path(getattr(held, "__file__", None) or "").resolve() == path:
                return
            raise ImportError(f"a module named {name!r} is imported already (from "
                              f"{getattr(held, '__file__', None) or 'Python itself'}): rename the file")
        try:  # an installed module of that name: the file would take its place (mlflow.py broke MLflow's import)
            other = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            other = None
        if other is not None and other.origin and Path(other.origin).resolve() != path:
            raise ImportError(f"a module named {name!r} exists already ({other.origin}): rename the file")
        if str(path.parent) not in sys.path:
            sys.path.append(str(path.parent))  # after the rest: its helpers must not hide installed modules
        found = importlib.util.spec_from_file_location(name, given)
        assert found is not None and found.loader is not None  # a .py file always has a source loader
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        try:
            found.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return
    top = spec.split(".")[0]
    local = next((p for p in (Path(top + ".py"), Path(top) / "__init__.py") if p.is_file()), None)
    if local is not None:
        try:  # the module that name imports: one imported already, else the first on the path
            held = sys.modules.get(top)
            origin = getattr(held, "__file__", None) if held is not None else getattr(
                importlib.util.find_spec(top), "origin", None)
        except (ImportError, ValueError):
            origin = None
        if origin and Path(origin).resolve() != local.resolve():
            raise ImportError(f"{local} is hidden by an installed module {top!r} ({origin}): rename it, or give "
                              f"the file: --plugin {local}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        # after the rest, as a file's folder is: first, a local mlflow.py hid MLflow from the whole command
        sys.path.append(os.getcwd())
    module = importlib.import_module(spec)
    if getattr(module, "__file__", None) is None and hasattr(module, "__path__"):  # nothing of it ran, no word
        raise ImportError(f"{spec} is a folder without an __init__.py (a namespace package): no code of it runs; "
                          f"name its module (--plugin {spec}.NAME) or add {spec}/__init__.py")
