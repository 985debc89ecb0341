"""A review's votes on their own: the Bradley–Terry fit, the choice of pairs, and the record in a real study."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import optuna
import pytest

from gantune.errors import GantuneError
from gantune.sampling import votes as V


def _vote(a: int, b: int, winner: int | None) -> V.Vote:
    return V.Vote(a, b, winner, "")


def _simulate(strength: dict[int, float], per_pair: int, seed: int) -> list[V.Vote]:
    rng = random.Random(seed)
    out = []
    for a, b in itertools.combinations(strength, 2):
        for _ in range(per_pair):
            out.append(_vote(a, b, a if rng.random() < strength[a] / (strength[a] + strength[b]) else b))
    rng.shuffle(out)
    return out


def test_bradley_terry_recovers_the_order_of_known_strengths() -> None:
    truth = {10: 8.0, 11: 4.0, 12: 2.0, 13: 1.0, 14: 0.5}
    votes = _simulate(truth, per_pair=60, seed=0)
    assert [r.trial for r in V.ranking(truth, votes)] == [10, 11, 12, 13, 14]
    # the fit is the fixed point of the regularised likelihood: wins + prior = expected wins (games and prior)
    p = V.bradley_terry(truth, votes)
    for i in truth:
        wins = sum(v.winner == i for v in votes)
        expected = sum(p[i] / (p[i] + p[v.b if v.a == i else v.a]) for v in votes if i in (v.a, v.b))
        assert wins + V.PRIOR == pytest.approx(expected + 2 * V.PRIOR * p[i] / (p[i] + 1), rel=1e-6)
    # strengths are on the reference's scale: the ratios come out near the truth's (2 between neighbours)
    ratios = [p[i] / p[i + 1] for i in range(10, 14)]
    assert all(1.3 < r < 3.5 for r in ratios), ratios


def test_an_unbeaten_trial_ranks_first_and_stays_finite() -> None:
    votes = [_vote(7, 3, 7), _vote(5, 7, 7), _vote(3, 7, 7), _vote(3, 5, 3), _vote(5, 3, 5), _vote(3, 5, None)]
    ranks = V.ranking([3, 5, 7, 9], votes)
    assert ranks[0].trial == 7
    top = ranks[0]
    assert math.isfinite(top.score) and top.score > 1 and (top.wins, top.comparisons, top.win_rate) == (3, 3, 1.0)
    assert all(math.isfinite(r.score) and r.score > 0 for r in ranks)
    # a trial never compared keeps the reference strength and has no win rate; a skip is not a comparison
    nine = next(r for r in ranks if r.trial == 9)
    assert nine.score == pytest.approx(1.0) and nine.win_rate is None
    assert next(r for r in ranks if r.trial == 3).comparisons == 4
    # more of the same only makes it stronger, never infinite
    assert math.isfinite(V.bradley_terry([], votes * 50)[7]) and V.bradley_terry([], votes * 50)[7] > top.score


def test_pairs_cycle_through_the_least_compared_swapping_sides() -> None:
    items = [4, 1, 9]
    votes: list[V.Vote] = []
    shown = []
    for _ in range(6):
        a, b = V.next_pair(items, votes)
        shown.append((a, b))
        counts = [sum(v.pair == frozenset(p) for v in votes) for p in itertools.combinations(items, 2)]
        assert sum(v.pair == frozenset((a, b)) for v in votes) == min(counts)  # one of the least compared
        votes.append(_vote(a, b, None if len(votes) == 2 else a))  # a skip counts as shown
    assert {frozenset(p) for p in shown[:3]} == {frozenset(p) for p in itertools.combinations(items, 2)}
    assert shown[3:] == [(b, a) for a, b in shown[:3]]  # the second round, sides swapped
    assert all(shown[i] != shown[i + 1] for i in range(5))
    # with four trials the next pair shares no trial with the last when it can
    assert set(V.next_pair([1, 2, 3, 4], [_vote(1, 2, 1)])) == {3, 4}


def test_the_metrics_order_decides_neither_the_pair_nor_its_sides() -> None:
    """``items`` is the metric's order, best first: it chose the first pairs (the top two first) and put the
    better trial on the left of every pair's first showing, so a person could tell which side the metric liked."""
    items = list(range(10))
    first = [V.next_pair(items, [_vote(a, b, a) for a, b in itertools.combinations(items, 2) if (a, b) != p]) for p
             in itertools.combinations(items, 2)]  # each pair shown for the first time, the rest once before
    assert first == [V.next_pair(items[::-1], [_vote(a, b, a) for a, b in itertools.combinations(items, 2)
                                               if (a, b) != tuple(sorted(p))]) for p in first]
    better_left = sum(a < b for a, b in first)
    assert 10 <= better_left <= 35  # of 45: neither side is the metric's (a fixed hash: 45 draws of a coin)
    shown: list[tuple[int, int]] = []
    for _ in range(5):
        shown.append(V.next_pair(items, [_vote(a, b, a) for a, b in shown]))
    assert shown == [V.next_pair(items[::-1], [_vote(a, b, a) for a, b in shown[:n]]) for n in range(5)]
    with pytest.raises(ValueError):
        V.next_pair([1], [])


def test_kendall_tau_matches_scipy() -> None:
    from scipy.stats import kendalltau

    x, y = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0], [2.0, 1.0, 4.0, 3.0, 6.0, 5.0]
    assert V.kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert V.kendall_tau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert V.kendall_tau([1.0], [1.0]) is None and V.kendall_tau([1.0, 1.0], [1.0, 2.0]) is None


def test_votes_are_kept_in_a_sqlite_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    with pytest.raises(GantuneError, match="--by human: search 's' has no review votes yet"):
        V.favourite(study)
    V.add_vote(study, 2, 5, None, [2, 5, 8])
    with pytest.raises(GantuneError, match="no review votes yet"):  # a skip chooses nothing
        V.favourite(study)
    V.add_vote(study, 2, 5, 5, [2, 5, 8])
    V.add_vote(study, 8, 5, 5, [2, 5, 8])
    with pytest.raises(ValueError):
        V.add_vote(study, 2, 5, 8)
    again = optuna.load_study(study_name="s", storage=storage)  # a fresh reader, as a restarted page is
    votes = V.load_votes(again)
    assert [(v.a, v.b, v.winner) for v in votes] == [(2, 5, None), (2, 5, 5), (8, 5, 5)]
    assert all(v.time.endswith("+00:00") for v in votes)
    stored = again.user_attrs[V.RANKING_KEY]
    assert stored[0]["trial"] == 5 and {r["trial"] for r in stored} == {2, 5, 8}
    assert stored[0]["wins"] == 2 and stored[0]["win_rate"] == 1.0
    assert V.favourite(again) == 5
    # the attribute is anyone's to write: what is not a vote is passed over
    again.set_user_attr(V.VOTES_KEY, [*again.user_attrs[V.VOTES_KEY], {"a": 1}, "junk", {"a": 1, "b": 1}])
    assert len(V.load_votes(again)) == 3


def test_votes_of_two_pages_at_once_are_all_kept(tmp_path: Path) -> None:
    """Two review pages on one search (two processes, each its own study handle) wrote the whole list back with
    each vote: answered 10 votes, 6 were kept. Each vote is now its own attribute."""
    import threading

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=storage)
    pages = [optuna.load_study(study_name="s", storage=storage) for _ in range(2)]
    start = threading.Barrier(2)

    def answer(page: optuna.Study, winner: int) -> None:
        start.wait()
        for _ in range(15):
            V.add_vote(page, 2, 5, winner, [2, 5])

    threads = [threading.Thread(target=answer, args=(page, w)) for page, w in zip(pages, (2, 5), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = optuna.load_study(study_name="s", storage=storage)
    votes = V.load_votes(again)
    assert len(votes) == 30 and sum(v.winner == 2 for v in votes) == 15
    assert {e["id"] for e in again.user_attrs[V.VOTES_KEY]} <= set(again.user_attrs)  # the list: a view of them
    for key in [k for k in again.user_attrs if k.startswith(V.VOTE_PREFIX)][:3]:  # null: taken back
        again.set_user_attr(key, None)
    assert len(V.load_votes(again)) == 27


def test_stored_entries_that_are_not_votes_are_ignored() -> None:
    """The attributes are user-writable: a ``human_votes`` that is not a list (a TypeError) or a vote naming
    trial infinity (an OverflowError) ended report, review and ``export --by human`` in a traceback, and ``true``
    or ``1.9`` were read as trial 1."""
    study = optuna.create_study()
    study.set_user_attr(V.VOTES_KEY, 5)
    for key, raw in {"inf": {"a": 1, "b": 2, "winner": math.inf}, "bool": {"a": True, "b": 2, "winner": 2},
                     "frac": {"a": 1.9, "b": 2, "winner": 2}, "ok": {"a": 1.0, "b": 2, "winner": 2}}.items():
        study.set_user_attr(V.VOTE_PREFIX + key, raw)
    assert [(v.a, v.b, v.winner) for v in V.load_votes(study)] == [(1, 2, 2)]


def test_a_favourite_needs_votes_that_link_it_to_the_rest(tmp_path: Path) -> None:
    """The review's first two pairs share no trial: after ``2 > 3`` and ``1 > 0`` trials 1 and 2 had the same
    strength, and ``export --by human`` wrote trial 1 as the person's favourite (the lower number) though nobody
    had compared them; a 30-0 winner of one piece outranked a 1-0 winner of another the same way. The votes must
    link the best trial to the others (directly or through others), and two best tied name no favourite."""
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    V.add_vote(study, 3, 2, 2, [3, 2, 0, 1])
    V.add_vote(study, 0, 1, 1, [3, 2, 0, 1])
    assert V.linked(V.load_votes(study)) == [{0, 1}, {2, 3}]
    with pytest.raises(GantuneError) as unlinked:
        V.favourite(study)
    assert str(unlinked.value) == ("--by human: the votes never compare trial 1 with trial 2, not even through other "
                                   "trials: compare them in gantune review s (--top N shows more of the best trials)")
    V.add_vote(study, 2, 0, 2, [3, 2, 0, 1])  # 2 beats 0, which lost to 1: now linked
    assert V.linked(V.load_votes(study)) == [{0, 1, 2, 3}] and V.favourite(study) == 2
    tie = [V.Vote(4, 5, 4, ""), V.Vote(4, 5, 5, "")]
    assert V.chosen(tie) == (None, "trials 4 and 5 tie in the votes")
    assert V.chosen([V.Vote(4, 5, None, "")]) == (None, None)
    # tau over the pairs the votes link only: across pieces the strengths are no comparison
    assert V.kendall_tau([2.0, 1.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1]) == pytest.approx(-1.0)
    assert V.kendall_tau([2.0, 1.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]) != pytest.approx(-1.0)


def test_an_answer_whose_list_cannot_be_written_is_kept_and_said_once(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The answer's own key was written, then the list or the ranking failed: the page said the storage failed,
    so the answer was given again and counted twice. The database here fails writing the list: a trigger reads
    malformed JSON (sqlite's own error, through Optuna and SQLAlchemy as any failing write; a trigger's RAISE is
    an integrity error, which Optuna passes over)."""
    import sqlite3

    db = tmp_path / "optuna.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    with sqlite3.connect(db) as con:
        con.executescript(f"""
            CREATE TRIGGER no_list BEFORE INSERT ON study_user_attributes WHEN NEW.key = '{V.VOTES_KEY}'
            BEGIN SELECT json('{{'); END;""")
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert [v.winner for v in V.add_vote(study, 2, 5, 5, [2, 5])] == [5]
    assert len(V.load_votes(optuna.load_study(study_name="s", storage=f"sqlite:///{db}"))) == 1
    err = capsys.readouterr().err
    assert err == (f"warning: the answer is kept, but the study's {V.VOTES_KEY} was not updated (malformed JSON): "
                   "the next answer writes it\n"), err
    assert V.RANKING_KEY in optuna.load_study(study_name="s", storage=f"sqlite:///{db}").user_attrs
    with sqlite3.connect(db) as con:
        con.execute("DROP TRIGGER no_list")
    V.add_vote(study, 2, 5, 2, [2, 5])
    again = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert len(again.user_attrs[V.VOTES_KEY]) == 2 and len(V.load_votes(again)) == 2
