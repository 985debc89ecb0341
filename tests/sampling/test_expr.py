"""The expression language of search spaces, on its own: what it evaluates, what it refuses, the names it reads."""

from __future__ import annotations

import pytest

from gantune.sampling.expr import Expr, ExprError

VALUES = {"optim.lr_g": 2e-4, "ttur_ratio": 4.0, "loss.name": "wgan-gp", "model.g_width": 64}


@pytest.mark.parametrize(("text", "expected"), [
    ("optim.lr_g * ttur_ratio", 8e-4),
    ("model.g_width // 2 + 1", 33),
    ("2 ** 3 % 5", 3),
    ("-ttur_ratio", -4.0),
    ("loss.name in ['wgan', 'wgan-gp']", True),
    ("loss.name not in ('hinge',)", True),
    ("ttur_ratio > 2 and not model.g_width < 32", True),
    ("ttur_ratio < 2 or loss.name == 'hinge'", False),
    ("1.0e-3 if loss.name == 'wgan-gp' else 2.0e-4", 1e-3),
    ("min(model.g_width, 32) + max(1, 2) + abs(-3) + round(2.6) + int(1.9) + float(1)", 32 + 2 + 3 + 3 + 1 + 1.0),
    ("ttur_ratio ** 0.5 + 10 ** -4", 2.0001),
    ("-(2 ** 4096) < 0", True),  # the largest integer power allowed
])
def test_evaluates(text: str, expected: object) -> None:
    assert Expr(text)(VALUES.__getitem__) == pytest.approx(expected)


def test_names_are_the_dotted_paths_it_reads() -> None:
    names = Expr("optim.lr_g * ttur_ratio if loss.name == 'wgan' else 1").names
    assert sorted(names) == ["loss.name", "optim.lr_g", "ttur_ratio"]


@pytest.mark.parametrize(("text", "needle"), [
    ("__import__('os').system('true')", "only min, max, abs, round, int, float may be called"),
    ("optim.lr_g.__class__()", "may be called"),
    ("[x for x in (1, 2)]", "ListComp is not allowed"),
    ("lambda: 1", "Lambda is not allowed"),
    ("optim.lr_g[0]", "Subscript is not allowed"),
    ("1 +", "cannot parse"),
    ("min(1, key=abs)", "may be called"),
    # operators outside the language are refused when the space loads, not in every trial
    ("~optim.lr_g", "the operator ~ is not allowed"),
    ("model.g_width & 1", "the operator & is not allowed"),
    ("model.g_width << 2", "the operator << is not allowed"),
    ("loss.name is None", "the operator is is not allowed"),
    ("b'x'", "the constant b'x' is not allowed"),
    # a substring test: ``in 'wgan-gp'`` held for wgan too
    ("loss.name in 'wgan-gp'", "loss.name in 'wgan-gp' tests whether loss.name is a part of that text; compare "
                               "with == or give a list: in ['wgan-gp']"),
    ("1 if loss.name not in 'hinge' else 2", "loss.name in 'hinge' tests whether"),
    # every part that reads no name is evaluated at load, with bounded powers: these fail at once
    ("optim.lr_g * 9**9**9", "9 ** 387420489 is too large"),  # computed for ever before
    ("((9**1000)**1000)**1000", "a 3170-bit integer ** 1000 is too large"),
    ("2.0 ** 10000", "overflows"),
    ("optim.lr_g * (-2.0) ** 0.5", "(-2.0) ** 0.5 is not a real number"),  # a complex number: crashed the study
    ("optim.lr_g * 0 ** -1", "zero to a negative power"),
    ("optim.lr_g * (1 / 0)", "division by zero"),
    ("optim.lr_g * min([1] * 3)", "* takes numbers, not list and int"),  # [0] * 10**9 would fill the memory
    ("'a' * 3", "* takes numbers, not str and int"),
    ("optim.lr_g * round(1, -10**9)", "round to -1000000000 digits is out of range"),  # never ended
])
def test_refuses(text: str, needle: str) -> None:
    with pytest.raises(ExprError) as err:
        Expr(text)
    assert needle in str(err.value)


def test_strings_join() -> None:
    assert Expr("'spectral+' + loss.name")(VALUES.__getitem__) == "spectral+wgan-gp"


def test_a_power_of_sampled_values_is_bounded_when_evaluated() -> None:
    power = Expr("ttur_ratio ** model.g_width")
    assert power({"ttur_ratio": 2, "model.g_width": 64}.__getitem__) == 2**64
    with pytest.raises(ExprError, match="9 \\*\\* 387420489 is too large"):
        power({"ttur_ratio": 9, "model.g_width": 9**9}.__getitem__)
    with pytest.raises(ExprError, match="is not a real number"):
        Expr("(ttur_ratio - 1) ** 0.5")({"ttur_ratio": 0.5}.__getitem__)
    rounded = Expr("round(optim.lr_g, model.g_width)")
    assert rounded({"optim.lr_g": 0.123, "model.g_width": 2}.__getitem__) == 0.12
    with pytest.raises(ExprError, match="out of range"):
        rounded({"optim.lr_g": 1, "model.g_width": -10**100}.__getitem__)


@pytest.mark.parametrize(("text", "values", "expected"), [
    ("optim.lr_g * (ttur_ratio or 2)", {"optim.lr_g": 1.0, "ttur_ratio": 3.0}, 3.0),  # was lr_g * True: 1.0
    ("optim.lr_g * (ttur_ratio or 2)", {"optim.lr_g": 1.0, "ttur_ratio": 0.0}, 2.0),
    ("loss.name == 'hinge' and model.g_width", {"loss.name": "hinge", "model.g_width": 64}, 64),
    ("loss.name == 'hinge' and model.g_width", {"loss.name": "wgan", "model.g_width": 64}, False),
])
def test_and_or_give_the_deciding_operand_as_python_does(text: str, values: dict[str, object],
                                                         expected: object) -> None:
    """``and``/``or`` gave true or false whatever their operands, and a number times true is that number: ``lr_g *
    (ttur or 2)`` searched lr_d == lr_g in every trial, without a word."""
    got = Expr(text)(values.__getitem__)
    assert got == expected and type(got) is type(expected)


def test_a_product_of_sampled_integers_is_bounded_when_evaluated() -> None:
    """A chain of parameters each the square of the one before (``p1 = p0 * p0`` ...) doubled the digits at every
    link: 22 links of 3 computed for minutes at load, 30 for hours."""
    square = Expr("p * p")
    assert square({"p": 2**2048}.__getitem__) == 2**4096
    with pytest.raises(ExprError, match="a 3247-bit integer \\* a 3247-bit integer is too large"):
        square({"p": 3**2048}.__getitem__)
    with pytest.raises(ExprError, match="too large"):
        Expr("optim.lr_g * (3**2048 * 3**2048)")  # a part that reads no name: at parse


def test_strings_and_lists_built_from_parameters_are_bounded() -> None:
    """A chain of parameters each twice the one before (``p1 = [p0, p0]`` or ``p0 + p0`` ...) doubled the value at
    every link: 26 links compared for 28 s at load, or took 5.5 GB; nothing bounded them but the expression's
    own length, which a chain does not grow."""
    from gantune.sampling.expr import MAX_SIZE

    pair, twice = Expr("[p, p]"), Expr("p + p")
    assert twice({"p": "ab"}.__getitem__) == "abab"
    shared: list[object] = [1]
    for _ in range(11):  # 2**11 items in 2**12 - 1 lists, shared: each link is cheap to count
        shared = pair({"p": shared}.__getitem__)
    with pytest.raises(ExprError, match=f"a list of more than {MAX_SIZE} items \\(nested lists' counted\\) is too"):
        pair({"p": shared}.__getitem__)
    with pytest.raises(ExprError, match=f"a string of more than {MAX_SIZE} characters is too large"):
        twice({"p": "x" * (MAX_SIZE // 2 + 1)}.__getitem__)
    with pytest.raises(ExprError, match="too large"):
        twice({"p": [0] * (MAX_SIZE // 2 + 1)}.__getitem__)
