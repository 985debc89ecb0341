"""The only package that imports Ray: Optuna-backed Searcher, ASHA scheduler, the driver's book, run_search."""

from gantune.search.runner import SearchOptions, check_run, run_search

__all__ = ["SearchOptions", "check_run", "run_search"]
