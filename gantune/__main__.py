"""``python -m gantune``: the ``gantune`` command, where its console script is not on the PATH (a venv not
activated, ``pip install --user``)."""

import sys

from gantune.cli import main

sys.exit(main())
