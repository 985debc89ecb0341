"""A person's judgements of trials (``gantune review``): the votes, kept in the study, and the ranking from them.

Each answer to "which is better?" is one vote ``{a, b, winner, time}`` (``winner`` is ``a``, ``b`` or ``None``
for a skip), stored as a user attribute of the study of its own, ``human_vote:<time>-<random>``: two review pages
on one search each wrote the whole list back, and the votes of one were lost. After each vote the list of them
all is written to ``human_votes`` and the derived ranking to ``human_ranking``, so optuna-dashboard and other
readers see them without gantune (a list from before, without the keys, is read as votes too). The study is the
record: a review page that restarts reads its votes back from there.

The ranking is a Bradley–Terry model fitted by Hunter's (2004) MM algorithm, with every trial also given
``PRIOR`` virtual wins and ``PRIOR`` virtual losses against a reference of strength 1. Without that prior a
trial that won every comparison would have infinite strength (the maximum-likelihood fit does not exist); with it
every strength is finite and positive and the fit exists whatever the votes. The win rate is reported beside it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.exceptions import OptunaError

from gantune.errors import GantuneError
from gantune.events import warn
from gantune.sampling.study import storage_said

VOTES_KEY = "human_votes"
#: the prefix of each vote's own user attribute (a value of null: a vote taken back)
VOTE_PREFIX = "human_vote:"
RANKING_KEY = "human_ranking"
#: virtual wins and losses of every trial against a reference of strength 1 (keeps unbeaten trials finite)
PRIOR = 0.5


def _number(x: Any) -> int:
    """A trial number as stored (an int, or a float JSON made of one)."""
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    if isinstance(x, float) and x.is_integer():  # not infinity
        return int(x)
    raise ValueError(f"not a trial number: {x!r}")


@dataclass(frozen=True)
class Vote:
    a: int
    b: int
    winner: int | None  # a, b, or None: skipped (counts as shown for the choice of pairs, not for the ranking)
    time: str

    @classmethod
    def parse(cls, raw: Any) -> Vote:
        """A stored vote; ``ValueError`` when it is not one (trial numbers are whole numbers: ``int`` read
        ``true`` as trial 1 and ``1.9`` as 1, and raised ``OverflowError`` on infinity, a traceback)."""
        a, b, winner = _number(raw["a"]), _number(raw["b"]), raw.get("winner")
        winner = None if winner is None else _number(winner)
        if a == b or winner not in (a, b, None):
            raise ValueError(f"not a vote between two trials: {raw!r}")
        return cls(a, b, winner, str(raw.get("time", "")))

    @property
    def pair(self) -> frozenset[int]:
        return frozenset((self.a, self.b))


@dataclass(frozen=True)
class Rank:
    """One trial's standing: Bradley–Terry strength (reference 1), decided comparisons, win rate."""

    trial: int
    score: float
    wins: int
    comparisons: int  # decided ones (skips excluded)

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.comparisons if self.comparisons else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "win_rate": self.win_rate}


def bradley_terry(items: Iterable[int], votes: Sequence[Vote], prior: float = PRIOR, tol: float = 1e-10,
                  max_iter: int = 10_000) -> dict[int, float]:
    """Strength of each of ``items`` (and of every trial in ``votes``): the MM fixed point

    ``p_i <- (W_i + prior) / (sum_j n_ij / (p_i + p_j) + 2 prior / (p_i + 1))``

    where ``W_i`` are i's wins and ``n_ij`` the decided comparisons of i and j. A trial with no votes keeps the
    reference strength 1.
    """
    names = sorted({*items, *(v.a for v in votes), *(v.b for v in votes)})
    wins = dict.fromkeys(names, 0.0)
    games: dict[tuple[int, int], int] = {}
    for v in votes:
        if v.winner is None:
            continue
        wins[v.winner] += 1
        for i, j in ((v.a, v.b), (v.b, v.a)):
            games[i, j] = games.get((i, j), 0) + 1
    opponents: dict[int, list[tuple[int, int]]] = {i: [] for i in names}
    for (i, j), n in games.items():
        opponents[i].append((j, n))
    p = dict.fromkeys(names, 1.0)
    for _ in range(max_iter):
        new = {i: (wins[i] + prior) / (sum(n / (p[i] + p[j]) for j, n in opponents[i]) + 2 * prior / (p[i] + 1))
               for i in names}
        change = max((abs(math.log(new[i] / p[i])) for i in names), default=0.0)
        p = new
        if change < tol:
            break
    return p


def ranking(items: Iterable[int], votes: Sequence[Vote]) -> list[Rank]:
    """Every trial of ``items`` and ``votes``, best first: by Bradley–Terry strength, then wins, then number."""
    strength = bradley_terry(items, votes)
    wins = dict.fromkeys(strength, 0)
    decided = dict.fromkeys(strength, 0)
    for v in votes:
        if v.winner is not None:
            wins[v.winner] += 1
            decided[v.a] += 1
            decided[v.b] += 1
    ranks = [Rank(t, strength[t], wins[t], decided[t]) for t in strength]
    return sorted(ranks, key=lambda r: (-r.score, -r.wins, r.trial))


def next_pair(items: Sequence[int], votes: Sequence[Vote]) -> tuple[int, int]:
    """The pair to show next: one of those compared least so far (skips count), preferring a pair that shares
    no trial with the last one shown, then the one shown longest ago. Nothing here reads ``items``' order (the
    metric's, best first): with it breaking the ties, the top two came first and the metric's favourite sat on
    the left of every pair's first showing, so a person could tell which side the metric liked. The last ties go
    by a hash of the pair and its first side by another; a pair's sides swap each time it comes back."""
    if len(items) < 2:
        raise ValueError("a pair needs two trials")
    count: dict[frozenset[int], int] = {}
    last_seen: dict[frozenset[int], int] = {}
    for n, v in enumerate(votes):
        count[v.pair] = count.get(v.pair, 0) + 1
        last_seen[v.pair] = n
    previous = votes[-1].pair if votes else frozenset()
    pairs = [tuple(sorted(ab)) for ab in itertools.combinations(set(items), 2)]
    a, b = min(pairs, key=lambda ab: (count.get(frozenset(ab), 0), bool(previous & set(ab)),
                                      last_seen.get(frozenset(ab), -1), _digest("order", ab)))
    return (b, a) if (count.get(frozenset((a, b)), 0) + _digest("side", (a, b))[0]) % 2 else (a, b)


def _digest(what: str, pair: tuple[int, ...]) -> bytes:
    """A fixed, order-free stand-in for a coin (the same on every machine and restart, unlike ``hash``)."""
    return hashlib.sha256(f"{what}:{pair[0]}:{pair[1]}".encode()).digest()


def kendall_tau(x: Sequence[float], y: Sequence[float], groups: Sequence[int] | None = None) -> float | None:
    """Kendall's tau-b of two paired sequences (ties allowed); ``None`` when it is undefined (fewer than two
    pairs, or one side all tied). ``groups``: only pairs of the same group count (the pieces the votes link:
    ``linked``; across them ``x`` is no comparison)."""
    concordant = discordant = ties_x = ties_y = counted = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        if groups is not None and groups[i] != groups[j]:
            continue
        counted += 1
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif (dx > 0) == (dy > 0):
            concordant += 1
        else:
            discordant += 1
    n0 = concordant + discordant
    denom = math.sqrt((n0 + ties_x) * (n0 + ties_y))
    return (concordant - discordant) / denom if denom and counted >= 2 else None


# -- the study's record -------------------------------------------------------------------------------------------

def load_votes(study: optuna.Study) -> list[Vote]:
    """The votes stored on the study, in the order they were given: those of a ``human_votes`` list written before
    votes had keys of their own, then each vote's own attribute (entries that are not votes are ignored: the
    attributes are user-writable)."""
    older, keyed = _stored(study.user_attrs)
    return [*older, *(v for _, v in keyed)]


def _stored(attrs: dict[str, Any]) -> tuple[list[Vote], list[tuple[str, Vote]]]:
    """The votes of the list from before keys, and each keyed vote with its key, in order."""
    def parsed(raw: Any) -> Vote | None:
        try:
            return Vote.parse(raw)
        except (KeyError, TypeError, ValueError):
            return None

    listed = attrs.get(VOTES_KEY)
    older = [v for raw in (listed if isinstance(listed, list) else []) if not (isinstance(raw, dict) and "id" in raw)
             if (v := parsed(raw)) is not None]
    keyed = [(k, v) for k in sorted(k for k in attrs if k.startswith(VOTE_PREFIX)) if (v := parsed(attrs[k]))]
    return older, keyed


def add_vote(study: optuna.Study, a: int, b: int, winner: int | None, items: Iterable[int] = ()) -> list[Vote]:
    """Store one answer under its own key, then the list and the ranking all the stored votes now give (another
    page's votes included); all the votes."""
    now = dt.datetime.now(dt.timezone.utc)
    vote = Vote.parse({"a": a, "b": b, "winner": winner, "time": now.isoformat(timespec="seconds")})
    study.set_user_attr(f"{VOTE_PREFIX}{now.isoformat(timespec='microseconds')}-{uuid.uuid4().hex[:8]}", asdict(vote))
    older, keyed = _stored(study.user_attrs)  # the answer counts from here on: it is read by its key
    votes = [*older, *(v for _, v in keyed)]
    views = {VOTES_KEY: [*map(asdict, older), *({**asdict(v), "id": k} for k, v in keyed)],
             RANKING_KEY: [r.to_dict() for r in ranking(items, votes)]}
    failed: dict[str, OptunaError] = {}
    for key, view in views.items():  # for other readers: a failure is said as theirs, not as the answer's (the
        try:  # page said the storage failed, and the answer was given again: counted twice)
            study.set_user_attr(key, view)
        except OptunaError as err:
            failed[key] = err
    if failed:
        first = next(iter(failed.values()))
        warn(f"the answer is kept, but the study's {' and '.join(failed)} {'was' if len(failed) == 1 else 'were'} "
             f"not updated ({storage_said(first.__cause__ or first)}): the next answer writes "
             f"{'it' if len(failed) == 1 else 'them'}")
    return votes


def favourite(study: optuna.Study) -> int:
    """The trial people preferred: the highest Bradley–Terry strength of the stored votes, once the votes settle
    it (``unsettled``)."""
    trial, why = chosen(load_votes(study))
    if why is not None:
        raise GantuneError(f"--by human: {why}: compare them in gantune review {study.study_name} (--top N "
                           "shows more of the best trials)")
    if trial is None:
        raise GantuneError(f"--by human: search {study.study_name!r} has no review votes yet "
                           f"(run gantune review {study.study_name})")
    return trial


def chosen(votes: Sequence[Vote]) -> tuple[int | None, str | None]:
    """The favourite of ``votes`` (skips aside), or why they name none (``unsettled``); (None, None) before the
    first decided vote."""
    decided = [v for v in votes if v.winner is not None]
    if not decided:
        return None, None
    if (why := unsettled(decided)) is not None:
        return None, why
    return ranking((), decided)[0].trial, None


def linked(votes: Sequence[Vote]) -> list[set[int]]:
    """The trials of the decided votes in pieces: linked by votes, directly or through other trials, largest
    first. Between two pieces the votes say nothing: the strengths across them come from the prior and how many
    votes each trial won, not from any comparison."""
    piece: dict[int, set[int]] = {}
    for v in votes:
        if v.winner is None:
            continue
        joined = piece.get(v.a, {v.a}) | piece.get(v.b, {v.b})
        for t in joined:
            piece[t] = joined
    unique = {id(p): p for p in piece.values()}.values()
    return sorted(unique, key=lambda p: (-len(p), min(p)))


def unsettled(votes: Sequence[Vote]) -> str | None:
    """Why the decided ``votes`` name no favourite, or ``None``: the best trial and the best of another piece
    (``linked``) never compared, not even through others (the default review's first two pairs share no trial:
    after two answers the favourite was the lower-numbered of two winners of one vote each), or the two best
    tied."""
    ranks = [r for r in ranking((), votes) if r.comparisons]
    if len(ranks) < 2:
        return None
    pieces = linked(votes)
    top = ranks[0].trial
    own = next(p for p in pieces if top in p)
    if len(pieces) > 1:
        other = next(r.trial for r in ranks if r.trial not in own)
        return f"the votes never compare trial {top} with trial {other}, not even through other trials"
    if math.isclose(ranks[0].score, ranks[1].score, rel_tol=1e-9):
        return f"trials {top} and {ranks[1].trial} tie in the votes"
    return None
