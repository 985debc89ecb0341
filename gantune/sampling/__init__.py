"""The Optuna side of a search: what to try.

``space`` reads a search-space file into Optuna's define-by-run sampling, ``expr`` is the small expression
language its leaves may use, ``settings`` is its ``search`` section, and ``study`` keeps the Optuna study that
records every trial. Nothing here imports Ray: the Ray side (``gantune.search``) runs what this side samples.
"""
