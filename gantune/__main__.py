"""``python -m gantune``: the ``gantune`` command, where its console script is not on the PATH (a venv not
activated, ``pip install --user``)."""

import os
import sys
from pathlib import Path

# ``-m`` puts the working folder first on the path, where the console script does not: a ``yaml.py`` or ``mlflow.py``
# of the user's there was imported in place of the library (a traceback). It goes, unless gantune itself is
# imported from there (a source checkout run without installing).
try:  # (-P / PYTHONSAFEPATH adds no working folder: sys.path[0] is then the user's own first entry)
    if sys.path and not getattr(sys.flags, "safe_path", False) and \
            Path(sys.path[0] or os.curdir).resolve() == Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        del sys.path[0]
except OSError:  # a working folder deleted under the shell: Python added none either
    pass

from gantune.cli import main  # (after the path is as the console script has it)

sys.exit(main())
