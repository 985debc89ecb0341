"""Errors the user can fix. The CLI turns each into one line on stderr and exit code 2."""

from __future__ import annotations

import errno


class GantuneError(Exception):
    """Bad input: a config, a path, a dataset or a name the user gave."""


class ConfigError(GantuneError):
    """A config or search-space file that does not match the schema."""


class DataError(GantuneError):
    """A dataset that cannot be read (missing path, missing files, nothing to download from)."""


class Interrupted(Exception):
    """The user stopped a command (Ctrl-C): the CLI prints the message and exits with code 130."""


#: what the file system refuses wherever the command writes (a full disk, a read-only folder, no permission, a
#: path too long): one line naming the file, as for bad input, not a traceback (``gantune.cli.main``)
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG})
