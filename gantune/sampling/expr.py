"""A tiny, safe expression language for search spaces: derived values and ``when:`` conditions.

Names are dotted config paths (``optim.lr_g``) or free search parameters (``ttur_ratio``); literals, arithmetic,
comparisons, ``in``, ``and``/``or``/``not``, ``min``/``max``/``abs``/``round``. Nothing else is evaluated.

Everything is checked when a space is loaded: an operator outside the language is refused, and every part that
reads no name (``9**9**9``, ``1/0``) is evaluated then, so its error is the load's one line. Powers and products are
bounded (an integer result of at most ``MAX_INT_BITS`` bits), ``*`` repeats no strings or lists, and a string or list
holds at most ``MAX_SIZE`` characters or items (nested ones counted): no expression can hang the driver or fill its
memory, even through a chain of parameters that each doubles the last.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

#: the largest integer a power or a product may produce (a float one overflows on its own, at once)
MAX_INT_BITS = 4096


#: the most characters a string, or items a list (its nested lists' counted), an expression may build: a chain of
#: parameters ``p{k+1} = [p{k}, p{k}]`` (or ``p{k} + p{k}``) doubled it each link, and 26 links compared for 28 s or
#: took 5.5 GB
MAX_SIZE = 10_000


class ExprError(ValueError):
    pass


def _bounded(value: Any) -> Any:
    """``value`` when it holds at most ``MAX_SIZE`` characters or items, counted (nested lists too) only as far
    as the bound, so that a check costs no more than the bound however the lists share their parts."""
    left = MAX_SIZE
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, (str, list)):
            left -= len(v)
            if left < 0:
                raise ExprError(f"a string of more than {MAX_SIZE} characters is too large" if isinstance(value, str)
                                else f"a list of more than {MAX_SIZE} items (nested lists' counted) is too large")
            if isinstance(v, list):
                todo.extend(v)
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float))


def _numeric(op: Callable[[Any, Any], Any], symbol: str) -> Callable[[Any, Any], Any]:
    """``op`` on numbers only (``'a' * 10**9`` or ``[0] * 10**9`` would fill the memory), with an integer result
    of at most ``MAX_INT_BITS`` bits: each ``p{k+1} = p{k} * p{k}`` of a chain of parameters doubles the digits,
    and 30 of them computed for hours."""

    def apply(a: Any, b: Any) -> Any:
        if not (_is_number(a) and _is_number(b)):
            raise ExprError(f"{symbol} takes numbers, not {type(a).__name__} and {type(b).__name__}")
        if isinstance(a, int) and isinstance(b, int) and symbol == "*" and \
                abs(a).bit_length() + abs(b).bit_length() > MAX_INT_BITS + 2:  # 2**2048 squared as 2**4096
            raise ExprError(f"{int_shown(a)} * {int_shown(b)} is too large (an integer result may have at most "
                            f"{MAX_INT_BITS} bits)")
        return op(a, b)

    return apply


def int_shown(a: int) -> str:
    """An integer for a message: whole up to 64 bits, else its size (a 1,000-digit one would fill the line)."""
    return str(a) if abs(a).bit_length() <= 64 else f"a {abs(a).bit_length()}-bit integer"


def _add(a: Any, b: Any) -> Any:
    """Numbers, or two strings / two lists (of at most ``MAX_SIZE`` together)."""
    if _is_number(a) and _is_number(b):
        return a + b
    if type(a) is type(b) and isinstance(a, (str, list)):
        return _bounded(a + b)
    raise ExprError(f"+ takes two numbers, strings or lists, not {type(a).__name__} and {type(b).__name__}")


def _power(a: Any, b: Any) -> Any:
    """``a ** b`` with an integer result of at most ``MAX_INT_BITS`` bits: ``9**9**9`` would compute for ever."""
    if not (_is_number(a) and _is_number(b)):
        raise ExprError(f"** takes numbers, not {type(a).__name__} and {type(b).__name__}")
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1 and \
            (abs(a).bit_length() - 1) * b > MAX_INT_BITS:
        raise ExprError(f"{int_shown(a)} ** {b} is too large (an integer power may have at most {MAX_INT_BITS} bits)")
    try:
        out = a**b
    except OverflowError:
        raise ExprError(f"{a} ** {b} overflows") from None
    except ZeroDivisionError:
        raise ExprError(f"{a} ** {b}: zero to a negative power") from None
    if isinstance(out, complex):  # a config has no use for one, and it crashed the study's JSON storage
        raise ExprError(f"({a}) ** {b} is not a real number (a negative number to a fractional power)")
    return out


#: the most digits ``round`` may keep or drop: a float has no more than 324 decimals either way
MAX_ROUND_DIGITS = 400


def _round(x: Any, ndigits: Any = None) -> Any:
    """``round`` with at most ``MAX_ROUND_DIGITS`` digits: ``round(1, -10**9)`` computes 10**10**9 (never ends)."""
    if ndigits is not None and isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise ExprError(f"round to {ndigits} digits is out of range (at most {MAX_ROUND_DIGITS} either way)")
    return round(x) if ndigits is None else round(x, ndigits)


_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: _add, ast.Sub: _numeric(operator.sub, "-"), ast.Mult: _numeric(operator.mul, "*"),
    ast.Div: _numeric(operator.truediv, "/"), ast.FloorDiv: _numeric(operator.floordiv, "//"),
    ast.Mod: _numeric(operator.mod, "%"), ast.Pow: _power,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_OPS = {**_BIN, **_UNARY}
_CMP: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "abs": abs, "round": _round, "int": int,
                                          "float": float}

_SYMBOLS = {ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~",
            ast.MatMult: "@", ast.Is: "is", ast.IsNot: "is not"}
_CONSTANTS = (int, float, str, bool, type(None))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


class Expr:
    """A parsed expression; ``names`` are the dotted names it reads."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.shown = text if len(text) <= 80 else text[:77] + "..."  # what errors quote
        self.names: list[str] = []
        try:
            self.tree = ast.parse(text, mode="eval").body
            self._check(self.tree)
            self._fold(self.tree)
        except SyntaxError as err:
            raise ExprError(f"cannot parse {self.shown!r}: {err.msg}") from None
        except (RecursionError, MemoryError):  # the parser and the checks recurse once per nested part
            raise ExprError(f"{self.shown!r}: nested too deeply ({len(text)} characters)") from None

    def literal_tests(self) -> list[tuple[str, list[Any]]]:
        """Each ``name == literal``, ``!=``, ``in [literals]`` or ``not in`` the expression makes, as the name and the
        literals it is tested against: what a check can hold against the values the name can take (each literal of
        a list: one the name never takes beside one it does is a typo as likely as a value kept for later)."""
        out = []
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Compare) or len(node.ops) != 1 or \
                    not isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                continue
            left, right = node.left, node.comparators[0]
            if _dotted(left) is None and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
                left, right = right, left  # 'wgan' == loss.name
            name = _dotted(left)
            items = right.elts if isinstance(right, (ast.List, ast.Tuple)) and \
                isinstance(node.ops[0], (ast.In, ast.NotIn)) else [right]
            if name is not None and all(isinstance(i, ast.Constant) for i in items):
                out.append((name, [i.value for i in items if isinstance(i, ast.Constant)]))
        return out

    def truth_tests(self, tested: bool = False) -> list[str]:
        """The names the expression tests as true or false (an ``if``'s test, ``not``'s operand, an ``and``'s
        operand before the last, an operand of an ``and``/``or`` that is itself tested; ``tested``: the whole
        expression is, as a ``when``): what a check can hold against the values the name can take (a text choice
        is true whatever it says)."""
        out: list[str] = []

        def visit(node: ast.AST, tested: bool) -> None:
            if (name := _dotted(node)) is not None:
                out.extend([name] if tested else [])
            elif isinstance(node, ast.IfExp):
                visit(node.test, True)
                visit(node.body, tested)
                visit(node.orelse, tested)
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                visit(node.operand, True)
            elif isinstance(node, ast.BoolOp):
                for v in node.values:
                    visit(v, tested or (isinstance(node.op, ast.And) and v is not node.values[-1]))
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.expr) and not (isinstance(node, ast.Call) and child is node.func):
                        visit(child, False)

        visit(self.tree, tested)
        return out

    def _check(self, node: ast.AST) -> None:
        name = _dotted(node)
        if name is not None:
            self.names.append(name)
            return
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS) or node.keywords:
                raise ExprError(f"{self.shown!r}: only {', '.join(_FUNCS)} may be called")
            for a in node.args:
                self._check(a)
            return
        allowed = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.List, ast.Tuple, ast.IfExp)
        if not isinstance(node, allowed):
            raise ExprError(f"{self.shown!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, _CONSTANTS):
            raise ExprError(f"{self.shown!r}: the constant {node.value!r} is not allowed")
        ops = [node.op] if isinstance(node, (ast.BinOp, ast.UnaryOp)) else node.ops if isinstance(node, ast.Compare) \
            else []
        if isinstance(node, ast.Compare):
            for cmp, left, right in zip(node.ops, [node.left, *node.comparators[:-1]], node.comparators, strict=True):
                text = right.value if isinstance(right, ast.Constant) else None
                if isinstance(cmp, (ast.In, ast.NotIn)) and isinstance(text, str) and (name := _dotted(left)):
                    # ``loss.name in 'wgan-gp'`` held for wgan too: Python's substring test, not a list of one
                    raise ExprError(f"{self.shown!r}: {name} in {text!r} tests whether {name} is a part of that "
                                    f"text; compare with == or give a list: in [{text!r}]")
        for op in ops:
            if type(op) not in _OPS and type(op) not in _CMP:
                symbol = _SYMBOLS.get(type(op), type(op).__name__)
                raise ExprError(f"{self.shown!r}: the operator {symbol} is not allowed (arithmetic + - * / // % **, "
                                "comparisons, in, and, or, not)")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.operator, ast.cmpop, ast.boolop, ast.unaryop, ast.expr_context)):
                continue
            self._check(child)

    def _fold(self, node: ast.AST) -> None:
        """Evaluate each largest part that reads no name now, so that its error is the load's error."""
        if not _reads_names(node):
            try:
                self._eval(node, _no_names)
            except (ExprError, ArithmeticError, TypeError, ValueError) as err:
                raise ExprError(f"{self.shown!r}: {err}") from None
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr) and not (isinstance(node, ast.Call) and child is node.func):
                self._fold(child)

    def __call__(self, lookup: Callable[[str], Any]) -> Any:
        return self._eval(self.tree, lookup)

    def _eval(self, node: ast.AST, lookup: Callable[[str], Any]) -> Any:
        ev = self._eval
        name = _dotted(node)
        if name is not None:
            return lookup(name)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return _bounded([ev(e, lookup) for e in node.elts])
        if isinstance(node, ast.BinOp):
            return _BIN[type(node.op)](ev(node.left, lookup), ev(node.right, lookup))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](ev(node.operand, lookup))
        if isinstance(node, ast.BoolOp):  # Python's: the deciding operand (``ttur or 2`` is ttur, not True)
            stop = not isinstance(node.op, ast.And)  # ``and`` stops at a false operand, ``or`` at a true one
            for v in node.values:
                value = ev(v, lookup)
                if bool(value) is stop:
                    break
            return value
        if isinstance(node, ast.Compare):
            left = ev(node.left, lookup)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = ev(comp, lookup)
                if not _CMP[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body, lookup) if ev(node.test, lookup) else ev(node.orelse, lookup)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return _FUNCS[node.func.id](*(ev(a, lookup) for a in node.args))
        raise ExprError(f"{self.shown!r}: cannot evaluate {type(node).__name__}")  # pragma: no cover


def _reads_names(node: ast.AST) -> bool:
    """Whether evaluating ``node`` reads a config path or parameter (a called function's name does not count)."""
    if _dotted(node) is not None:
        return True
    return any(_reads_names(c) for c in ast.iter_child_nodes(node)
               if isinstance(c, ast.expr) and not (isinstance(node, ast.Call) and c is node.func))


def _no_names(name: str) -> Any:  # pragma: no cover - _fold only evaluates parts that read no name
    raise ExprError(f"{name} cannot be read here")
