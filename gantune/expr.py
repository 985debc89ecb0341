"""A tiny, safe expression language for search spaces: derived values and ``when:`` conditions.

Names are dotted config paths (``optim.lr_g``) or free search parameters (``ttur_ratio``); literals, arithmetic,
comparisons, ``in``, ``and``/``or``/``not``, ``min``/``max``/``abs``/``round``. Nothing else is evaluated.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_CMP: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "abs": abs, "round": round, "int": int,
                                          "float": float}


class ExprError(ValueError):
    pass


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
        try:
            self.tree = ast.parse(text, mode="eval").body
        except SyntaxError as err:
            raise ExprError(f"cannot parse {text!r}: {err.msg}") from None
        self.names: list[str] = []
        self._check(self.tree)

    def _check(self, node: ast.AST) -> None:
        name = _dotted(node)
        if name is not None:
            self.names.append(name)
            return
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS) or node.keywords:
                raise ExprError(f"{self.text!r}: only {', '.join(_FUNCS)} may be called")
            for a in node.args:
                self._check(a)
            return
        allowed = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.List, ast.Tuple, ast.IfExp)
        if not isinstance(node, allowed) or (isinstance(node, ast.BinOp) and type(node.op) not in _BIN):
            raise ExprError(f"{self.text!r}: {type(node).__name__} is not allowed")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.operator, ast.cmpop, ast.boolop, ast.unaryop, ast.expr_context)):
                continue
            self._check(child)

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
            return [ev(e, lookup) for e in node.elts]
        if isinstance(node, ast.BinOp):
            return _BIN[type(node.op)](ev(node.left, lookup), ev(node.right, lookup))
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand, lookup)
            unary: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos,
                                                       ast.Not: operator.not_}
            return unary[type(node.op)](v)
        if isinstance(node, ast.BoolOp):
            vals = (ev(v, lookup) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
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
        raise ExprError(f"{self.text!r}: cannot evaluate {type(node).__name__}")  # pragma: no cover
