"""The ``where`` expression language used to filter data IDs in registry queries.

Users type these expressions (``instrument='lco1m' AND band IN ('g','r')``), so the text is never pasted into
SQL: a hand-written tokenizer and recursive-descent parser build a small AST, and the compiler checks every name
against the dimension universe and every value against its column type before emitting a SQLAlchemy Core
expression whose values are all bound parameters. Errors name the 1-based column and draw a caret under it.
The same AST can be evaluated in Python (``evaluate_where``) so the planner can test a data ID without SQL.

Grammar (keywords AND, OR, NOT, IN are case-insensitive; AND binds tighter than OR)::

    expr     := and_expr (OR and_expr)*
    and_expr := not_expr (AND not_expr)*
    not_expr := NOT not_expr | primary
    primary  := '(' expr ')' | operand cmp operand | operand [NOT] IN '(' value (',' value)* ')'
    cmp      := '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
    operand  := name ['.' name] | 'string' | "string" | number
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast

import sqlalchemy as sa
from sqlalchemy.sql.elements import Grouping

from openastro_parsl.errors import WhereError

if TYPE_CHECKING:
    from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "And",
    "Comparison",
    "Identifier",
    "InList",
    "Literal",
    "Node",
    "Not",
    "Operand",
    "Or",
    "compile_where",
    "evaluate_where",
    "parse_where",
    "referenced_identifiers",
    "where_clause",
]

# --------------------------------------------------------------------------------------------------------------
# AST


@dataclass(frozen=True)
class Identifier:
    """``band`` or ``exposure.day_obs``; a bare name that is a key of ``binds`` (and no dimension) is a bind."""

    dimension: str
    attribute: str | None
    column: int  # 1-based position in the expression text

    @property
    def name(self) -> str:
        return self.dimension if self.attribute is None else f"{self.dimension}.{self.attribute}"


@dataclass(frozen=True)
class Literal:
    """A string, integer or float written in the expression."""

    value: str | int | float
    column: int


@dataclass(frozen=True)
class Comparison:
    """``left op right`` with ``op`` one of ``= != < <= > >=`` (``<>`` is parsed as ``!=``)."""

    op: str
    left: Operand
    right: Operand
    column: int


@dataclass(frozen=True)
class InList:
    """``operand [NOT] IN (item, ...)``; items are literals or bind names (a list bind expands in place)."""

    operand: Operand
    items: tuple[Operand, ...]
    negated: bool
    column: int


@dataclass(frozen=True)
class Not:
    """``NOT operand``."""

    operand: Node
    column: int


@dataclass(frozen=True)
class And:
    """``a AND b AND ...``."""

    operands: tuple[Node, ...]
    column: int


@dataclass(frozen=True)
class Or:
    """``a OR b OR ...``."""

    operands: tuple[Node, ...]
    column: int


Operand = Identifier | Literal
Node = Comparison | InList | Not | And | Or

# --------------------------------------------------------------------------------------------------------------
# Errors


def _fail(what: str, column: int | None, text: str, detail: str | None = None) -> NoReturn:
    """Raise a WhereError: ``where: <what> at column N[; detail]`` then the expression and a caret line."""
    message = f"where: {what}"
    if column is not None:
        message += f" at column {column}"
    if detail:
        message += f"; {detail}"
    if text and column is not None and 1 <= column <= len(text) + 1:
        shown = "".join(" " if c.isspace() else c for c in text)  # keep the caret aligned with one line
        message += f"\n  {shown}\n  {' ' * (column - 1)}^"
    raise WhereError(message)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _describe_value(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, str):
        return f"string {_quote(value)}"
    if isinstance(value, numbers.Integral):
        return f"integer {value}"
    if isinstance(value, numbers.Real):
        return f"float {value!r}"
    return f"{type(value).__name__} {value!r}"


_TYPE_NAMES = {int: "integer", float: "float", str: "string"}


def _type_name(pytype: type | None) -> str:
    return "any type" if pytype is None else _TYPE_NAMES.get(pytype, pytype.__name__)


def _a_type(pytype: type) -> str:
    name = _type_name(pytype)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


# --------------------------------------------------------------------------------------------------------------
# Tokenizer + parser

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_WORD_RE = re.compile(r"[A-Za-z0-9_.]*", re.ASCII)


def _word_end(text: str, pos: int) -> int:
    """Where the run of word characters and dots starting at ``pos`` ends."""
    match = _WORD_RE.match(text, pos)  # matches the empty string too: never None
    return match.end() if match else pos
_DIGITS = "0123456789"
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN"})
_OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">")  # two-character operators first
_INT_LIMIT = 2**63  # SQLite / SQL BIGINT range
_MAX_DEPTH = 100  # nested parentheses / NOTs; far beyond any real query, well within Python's recursion limit


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "string", "number", "op", "keyword", "(", ")", ",", "end"
    value: object
    raw: str
    column: int


def _describe_token(token: _Token) -> str:
    if token.kind == "end":
        return "end of expression"
    if token.kind == "keyword":
        return str(token.value)
    if token.kind == "string":
        return f"string {_quote(str(token.value))}"
    if token.kind == "number":
        return f"number {token.raw}"
    return f"'{token.raw}'"


class _Parser:
    """Recursive descent over tokens produced lazily, so the leftmost error is the one reported."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.token = self._lex()

    # -- tokenizer ---------------------------------------------------------------------------------------------

    def _lex(self) -> _Token:
        text, n = self.text, len(self.text)
        i = self.pos
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            self.pos = n
            return _Token("end", None, "", n + 1)
        c, column = text[i], i + 1
        nxt = text[i + 1] if i + 1 < n else ""
        nxt2 = text[i + 2] if i + 2 < n else ""

        if c in "'\"":
            return self._lex_string(i)

        if (
            c in _DIGITS
            or (c == "." and nxt and nxt in _DIGITS)
            or (c in "+-" and nxt and (nxt in _DIGITS or (nxt == "." and nxt2 and nxt2 in _DIGITS)))
        ):
            return self._lex_number(i)

        match = _IDENT_RE.match(text, i)
        if match:
            word, j = match.group(), match.end()
            if j < n and text[j] == ".":
                attr_match = _IDENT_RE.match(text, j + 1)
                if not attr_match:
                    _fail(f"expected an attribute name after '{word}.'", j + 2, text)
                k = attr_match.end()
                if k < n and text[k] == ".":
                    full = text[i : _word_end(text, k)]
                    _fail(
                        f"too many '.' in '{full}'", k + 1, text, "write a dimension or dimension.attribute"
                    )
                self.pos = k
                return _Token("ident", (word, attr_match.group()), text[i:k], column)
            self.pos = j
            if word.upper() in _KEYWORDS:
                return _Token("keyword", word.upper(), word, column)
            return _Token("ident", (word, None), word, column)

        for op in _OPERATORS:
            if text.startswith(op, i):
                self.pos = i + len(op)
                return _Token("op", "!=" if op == "<>" else op, op, column)
        if c in "(),":
            self.pos = i + 1
            return _Token(c, c, c, column)
        _fail(f"unexpected {c!r}", column, text)

    def _lex_string(self, start: int) -> _Token:
        text, quote = self.text, self.text[start]
        parts: list[str] = []
        j = start + 1
        while True:
            k = text.find(quote, j)
            if k < 0:
                _fail(
                    "unterminated string",
                    start + 1,
                    text,
                    f"close it with {quote} (write {quote}{quote} for a {quote} inside)",
                )
            parts.append(text[j:k])
            if text.startswith(quote, k + 1):  # doubled quote = one literal quote
                parts.append(quote)
                j = k + 2
                continue
            self.pos = k + 1
            return _Token("string", "".join(parts), text[start : k + 1], start + 1)

    def _lex_number(self, start: int) -> _Token:
        text = self.text
        match = _NUMBER_RE.match(text, start)
        if match is None:  # the caller saw a number start here
            _fail("expected a number", start + 1, text)
        raw, j = match.group(), match.end()
        if j < len(text) and (text[j].isalnum() or text[j] in "_."):
            bad = text[start : max(_word_end(text, j), j + 1)]
            _fail(f"invalid number '{bad}'", start + 1, text)
        value: int | float
        if any(c in raw for c in ".eE"):
            value = float(raw)
            if not math.isfinite(value):
                _fail(f"number {raw} is out of range", start + 1, text)
        else:
            value = int(raw)
            if not -_INT_LIMIT <= value < _INT_LIMIT:
                _fail(f"integer {raw} is out of range (64-bit)", start + 1, text)
        self.pos = j
        return _Token("number", value, raw, start + 1)

    # -- parser ------------------------------------------------------------------------------------------------

    def _advance(self) -> _Token:
        token = self.token
        self.token = self._lex()
        return token

    def _is_keyword(self, word: str) -> bool:
        return self.token.kind == "keyword" and self.token.value == word

    def parse(self) -> Node | None:
        if self.token.kind == "end":
            return None
        node = self._or()
        if self.token.kind == ")":
            _fail("unexpected ')'", self.token.column, self.text, "it has no matching '('")
        if self.token.kind != "end":
            _fail(
                f"unexpected {_describe_token(self.token)}",
                self.token.column,
                self.text,
                "expected AND, OR or the end of the expression",
            )
        return node

    def _or(self) -> Node:
        operands = [self._and()]
        while self._is_keyword("OR"):
            self._advance()
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands), operands[0].column)

    def _and(self) -> Node:
        operands = [self._not()]
        while self._is_keyword("AND"):
            self._advance()
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else And(tuple(operands), operands[0].column)

    def _nest(self, column: int) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            _fail(f"expression nested too deeply (more than {_MAX_DEPTH} levels)", column, self.text)

    def _not(self) -> Node:
        if self._is_keyword("NOT"):
            token = self._advance()
            self._nest(token.column)
            operand = self._not()
            self.depth -= 1
            return Not(operand, token.column)
        return self._primary()

    def _primary(self) -> Node:
        token = self.token
        if token.kind == "(":
            self._advance()
            if self.token.kind == ")":
                _fail("empty parentheses", token.column, self.text, "expected a condition inside")
            self._nest(token.column)
            node = self._or()
            self.depth -= 1
            if self.token.kind != ")":
                _fail(
                    f"expected ')' to close the '(' at column {token.column}, found {_describe_token(self.token)}",
                    self.token.column,
                    self.text,
                )
            self._advance()
            return node
        if token.kind not in ("ident", "string", "number"):
            _fail(
                f"expected a condition, found {_describe_token(token)}",
                token.column,
                self.text,
                "a condition looks like band = 'r' or exposure.day_obs >= 20260301",
            )
        left = self._operand(token)
        self._advance()
        if self.token.kind == "op":
            return self._comparison(left)
        if self._is_keyword("IN") or self._is_keyword("NOT"):
            return self._in_list(left)
        _fail(
            f"expected a comparison operator (=, !=, <, <=, >, >=) or IN after {token.raw}, "
            f"found {_describe_token(self.token)}",
            self.token.column,
            self.text,
        )

    @staticmethod
    def _operand(token: _Token) -> Operand:
        if token.kind == "ident":
            dimension, attribute = cast("tuple[str, str | None]", token.value)  # as the lexer makes them
            return Identifier(dimension, attribute, token.column)
        return Literal(cast("str | int | float", token.value), token.column)

    def _value_token(self, after: str) -> _Token:
        token = self.token
        if token.kind not in ("ident", "string", "number"):
            _fail(f"expected a value after {after}, found {_describe_token(token)}", token.column, self.text)
        return token

    def _comparison(self, left: Operand) -> Comparison:
        op_token = self._advance()
        if op_token.raw == "=" and self.token.raw == "=" and self.token.column == op_token.column + 1:
            _fail("'==' is not an operator", op_token.column, self.text, "write = for equality")
        right = self._operand(self._value_token(f"'{op_token.raw}'"))
        if isinstance(left, Literal) and isinstance(right, Literal):
            _fail(
                "comparison between two literal values",
                left.column,
                self.text,
                "one side must be a dimension such as band or exposure.day_obs",
            )
        self._advance()
        return Comparison(str(op_token.value), left, right, left.column)

    def _in_list(self, left: Operand) -> InList:
        negated = False
        if self._is_keyword("NOT"):
            self._advance()
            if not self._is_keyword("IN"):
                _fail(f"expected IN after NOT, found {_describe_token(self.token)}", self.token.column, self.text)
            negated = True
        if isinstance(left, Literal):
            _fail(
                f"IN needs a dimension on its left, got {_describe_value(left.value)}", left.column, self.text
            )
        self._advance()
        if self.token.kind != "(":
            _fail(f"expected '(' after IN, found {_describe_token(self.token)}", self.token.column, self.text)
        open_token = self._advance()
        if self.token.kind == ")":
            _fail("empty IN list", open_token.column, self.text, "give at least one value")
        items: list[Operand] = []
        while True:
            items.append(self._operand(self._value_token("','" if items else "'('")))
            self._advance()
            if self.token.kind == ",":
                self._advance()
                continue
            if self.token.kind == ")":
                self._advance()
                break
            _fail(
                f"expected ',' or ')' in the IN list opened at column {open_token.column}, "
                f"found {_describe_token(self.token)}",
                self.token.column,
                self.text,
            )
        return InList(left, tuple(items), negated, left.column)


def parse_where(text: str) -> Node | None:
    """Parse ``text``; return None for an empty/whitespace-only expression (meaning: no constraint).

    Raises WhereError for any syntax error, naming the 1-based column with a caret under it. Names are not
    checked here (the parser does not know the dimensions or binds); ``compile_where`` does that.
    """
    if not isinstance(text, str):
        raise TypeError(f"where expression must be a str, not {type(text).__name__}")
    return _Parser(text).parse()


def referenced_identifiers(
    node: Node | None, binds: Mapping[str, object] | None = None
) -> set[tuple[str, str | None]]:
    """The (dimension, attribute) pairs the expression uses, so the caller knows which tables to join.

    Bare names that are keys of ``binds`` are values, not columns, and are left out, as are IN-list items
    (which are always values).
    """
    binds = binds or {}
    found: set[tuple[str, str | None]] = set()

    def add(operand: Operand) -> None:
        if isinstance(operand, Identifier) and not (operand.attribute is None and operand.dimension in binds):
            found.add((operand.dimension, operand.attribute))

    def walk(n: Node) -> None:
        if isinstance(n, (And, Or)):
            for child in n.operands:
                walk(child)
        elif isinstance(n, Not):
            walk(n.operand)
        elif isinstance(n, Comparison):
            add(n.left)
            add(n.right)
        elif isinstance(n, InList):
            add(n.operand)
        else:
            raise TypeError(f"not a where-expression node: {n!r}")

    if node is not None:
        walk(node)
    return found


# --------------------------------------------------------------------------------------------------------------
# Name resolution and type checking, shared by the SQL compiler and the Python evaluator

_FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_PY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SEQUENCES = (list, tuple, set, frozenset)


@dataclass(frozen=True)
class _Dim:
    ident: Identifier
    pytype: type | None  # None when resolving without a universe (evaluate_where without types)


@dataclass(frozen=True)
class _Val:
    value: object
    column: int
    bind: str | None


@dataclass(frozen=True)
class _RCompare:
    op: str
    left: _Dim
    right: _Dim | _Val
    column: int


@dataclass(frozen=True)
class _RIn:
    left: _Dim
    values: tuple[object, ...]
    negated: bool


@dataclass(frozen=True)
class _RNot:
    operand: _Resolved


@dataclass(frozen=True)
class _RBool:
    is_and: bool
    operands: tuple[_Resolved, ...]


_Resolved = _RCompare | _RIn | _RNot | _RBool


class _Resolver:
    def __init__(
        self,
        types: Mapping[str, Mapping[str | None, type]] | None,
        binds: Mapping[str, object] | None,
        text: str,
    ) -> None:
        self.types = types
        self.binds = binds or {}
        self.text = text

    def node(self, node: Node) -> _Resolved:
        if isinstance(node, (And, Or)):
            return _RBool(isinstance(node, And), tuple(self.node(child) for child in node.operands))
        if isinstance(node, Not):
            return _RNot(self.node(node.operand))
        if isinstance(node, Comparison):
            return self.comparison(node)
        if isinstance(node, InList):
            return self.in_list(node)
        raise TypeError(f"not a where-expression node: {node!r}")

    def _is_bind(self, ident: Identifier) -> bool:
        if ident.attribute is not None or ident.dimension not in self.binds:
            return False
        if self.types is not None and ident.dimension in self.types:
            _fail(
                f"'{ident.dimension}' is both a dimension and a bind name",
                ident.column,
                self.text,
                "rename the bind",
            )
        return True

    def operand(self, operand: Operand) -> _Dim | _Val:
        if isinstance(operand, Literal):
            return _Val(operand.value, operand.column, None)
        if not isinstance(operand, Identifier):
            raise TypeError(f"not a where-expression operand: {operand!r}")
        if self._is_bind(operand):
            return _Val(self.binds[operand.dimension], operand.column, operand.dimension)
        return self.dimension(operand)

    def dimension(self, ident: Identifier) -> _Dim:
        if self.types is None:
            return _Dim(ident, None)
        attributes = self.types.get(ident.dimension)
        if attributes is None:
            detail = f"known dimensions: {', '.join(sorted(self.types))}"
            if self.binds and ident.attribute is None:
                detail += f"; binds: {', '.join(sorted(map(str, self.binds)))}"
            _fail(f"unknown dimension '{ident.dimension}'", ident.column, self.text, detail)
        if ident.attribute not in attributes:
            if ident.attribute is None:
                _fail(
                    f"dimension '{ident.dimension}' has no value of its own",
                    ident.column,
                    self.text,
                    "compare one of its attributes instead",
                )
            known = ", ".join(sorted(str(key) for key in attributes if key is not None))
            _fail(
                f"unknown attribute '{ident.name}'",
                ident.column + len(ident.dimension) + 1,
                self.text,
                f"{ident.dimension} has attributes: {known}" if known else f"{ident.dimension} has no attributes",
            )
        return _Dim(ident, attributes[ident.attribute])

    def coerce(self, dim: _Dim, value: object, column: int, bind: str | None) -> object:
        """Check ``value`` against the type of ``dim``; return it normalised to a plain Python value."""
        pytype = dim.pytype
        origin = f" from bind '{bind}'" if bind else ""
        if isinstance(value, float) and math.isnan(value):
            _fail(f"{dim.ident.name} cannot be compared with NaN{origin}", column, self.text)
        if pytype is None:
            return value
        if isinstance(value, bool):
            ok = pytype is bool
        elif pytype is int:
            ok = isinstance(value, numbers.Integral)
            if isinstance(value, numbers.Integral):
                value = int(value)
        elif pytype is float:
            ok = isinstance(value, numbers.Real)
            if isinstance(value, numbers.Real) and not isinstance(value, (int, float)):
                value = float(value)  # e.g. numpy scalars, so the DB driver can bind them
        else:
            ok = isinstance(value, pytype)
        if not ok:
            _fail(f"{dim.ident.name} is {_a_type(pytype)}, got {_describe_value(value)}{origin}", column, self.text)
        return value

    def comparison(self, node: Comparison) -> _RCompare:
        if node.op not in _PY_OPS:
            raise ValueError(f"unknown comparison operator {node.op!r}")
        left, right, op = self.operand(node.left), self.operand(node.right), node.op
        if isinstance(left, _Val):
            if isinstance(right, _Val):
                _fail(
                    "comparison has no dimension on either side",
                    node.column,
                    self.text,
                    "one side must be a dimension such as band or exposure.day_obs",
                )
            left, right, op = right, left, _FLIPPED[op]
        if isinstance(right, _Val):
            if isinstance(right.value, _SEQUENCES):
                _fail(
                    f"bind '{right.bind}' is a {type(right.value).__name__}",
                    right.column,
                    self.text,
                    f"a list bind may only be used inside IN, e.g. {left.ident.name} IN ({right.bind})",
                )
            right = _Val(self.coerce(left, right.value, right.column, right.bind), right.column, right.bind)
        elif not _comparable(left.pytype, right.pytype):
            _fail(
                f"cannot compare {left.ident.name} ({_type_name(left.pytype)}) "
                f"with {right.ident.name} ({_type_name(right.pytype)})",
                node.column,
                self.text,
            )
        return _RCompare(op, left, right, node.column)

    def in_list(self, node: InList) -> _RIn:
        left = self.operand(node.operand)
        if isinstance(left, _Val):
            what = f"bind '{left.bind}'" if left.bind else _describe_value(left.value)
            _fail(f"IN needs a dimension on its left, got {what}", left.column, self.text)
        values: list[object] = []
        for item in node.items:
            if isinstance(item, Literal):
                values.append(self.coerce(left, item.value, item.column, None))
            elif isinstance(item, Identifier) and self._is_bind(item):
                value = self.binds[item.dimension]
                elements = value if isinstance(value, _SEQUENCES) else (value,)
                values.extend(self.coerce(left, element, item.column, item.dimension) for element in elements)
            elif isinstance(item, Identifier):
                if item.attribute is not None or (self.types is not None and item.dimension in self.types):
                    _fail(
                        f"an IN list may only hold literal values and binds, got dimension {item.name}",
                        item.column,
                        self.text,
                    )
                binds = ", ".join(sorted(map(str, self.binds)))
                _fail(
                    f"unknown bind '{item.name}' in IN list",
                    item.column,
                    self.text,
                    f"binds: {binds}" if binds else "no binds were given",
                )
            else:
                raise TypeError(f"not a where-expression operand: {item!r}")
        return _RIn(left, tuple(values), node.negated)


def _comparable(a: type | None, b: type | None) -> bool:
    numeric = (int, float)
    return a is None or b is None or a is b or (a in numeric and b in numeric)


# --------------------------------------------------------------------------------------------------------------
# Back ends: SQLAlchemy Core and plain Python


def compile_where(
    node: Node | None,
    *,
    types: Mapping[str, Mapping[str | None, type]],
    column: Callable[[str, str | None], ColumnElement],
    binds: Mapping[str, object] | None = None,
    text: str = "",
) -> ColumnElement[bool]:
    """Check ``node`` against the universe and return a SQLAlchemy boolean expression (values are bound).

    ``types[dimension][None]`` is the dimension's own value type, ``types[dimension][attribute]`` an
    attribute's; ``column(dimension, attribute)`` returns the column to compare against (the caller joins).
    ``text`` is the original expression, used to draw carets in errors. A None node compiles to TRUE.
    """
    if node is None:
        return sa.true()
    resolved = _Resolver(types, binds, text).node(node)
    cache: dict[tuple[str, str | None], ColumnElement] = {}

    def col(dim: _Dim) -> ColumnElement:
        key = (dim.ident.dimension, dim.ident.attribute)
        if key not in cache:
            cache[key] = column(*key)
        return cache[key]

    def emit(r: _Resolved) -> ColumnElement[bool]:
        if isinstance(r, _RBool):
            parts = [emit(child) for child in (r.operands if r.is_and else _merge_equalities(r.operands))]
            if not parts:
                return sa.true() if r.is_and else sa.false()
            return _balanced(sa.and_ if r.is_and else sa.or_, parts)
        if isinstance(r, _RNot):
            return sa.not_(emit(r.operand))
        if isinstance(r, _RCompare):
            right = col(r.right) if isinstance(r.right, _Dim) else r.right.value  # a Python value -> bound param
            return _PY_OPS[r.op](col(r.left), right)  # SQLAlchemy overloads the operators
        values = list(r.values)
        return col(r.left).not_in(values) if r.negated else col(r.left).in_(values)

    return emit(resolved)


def _merge_equalities(operands: tuple[_Resolved, ...]) -> list[_Resolved]:
    """Merge the ORed equalities and IN lists of one dimension into one IN list.

    ``x = 1 OR x = 2 OR x IN (3, 4)`` becomes ``x IN (1, 2, 3, 4)``: the same rows (also under SQL's NULL logic), one
    list instead of thousands of terms when a script writes its data IDs out one by one.
    """
    lists: dict[tuple[str, str | None], list[object]] = {}
    out: list[_Resolved] = []
    for r in operands:
        dim: _Dim | None = None
        values: list[object] = []
        if isinstance(r, _RCompare) and r.op == "=" and isinstance(r.right, _Val) and r.right.value is not None:
            dim, values = r.left, [r.right.value]
        elif isinstance(r, _RIn) and not r.negated:
            dim, values = r.left, list(r.values)
        if dim is None:
            out.append(r)
            continue
        key = (dim.ident.dimension, dim.ident.attribute)
        if key in lists:
            lists[key].extend(values)
        else:
            lists[key] = values
            out.append(_RIn(dim, (), False))  # stands for the merged list, keeping the terms' order
    return [_RIn(r.left, tuple(dict.fromkeys(lists[(r.left.ident.dimension, r.left.ident.attribute)])), False)
            if isinstance(r, _RIn) and not r.values and not r.negated else r for r in out]


def _balanced(combine, parts: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """``combine`` of many terms as a balanced, parenthesised tree.

    SQLite parses a flat ``a OR b OR ...`` into a chain one level deeper per term and refuses chains past 1,000
    ("expression tree is too large").
    """
    if len(parts) <= 64:
        return combine(*parts)
    mid = len(parts) // 2
    return combine(_Parens(_balanced(combine, parts[:mid])), _Parens(_balanced(combine, parts[mid:])))


class _Parens(Grouping):
    """Parentheses SQLAlchemy keeps.

    A plain Grouping passes on its element's operator, so ``or_`` would flatten it back into one long chain.
    """

    inherit_cache = True

    @property
    def operator(self):
        return None


def where_clause(
    text: str,
    *,
    types: Mapping[str, Mapping[str | None, type]],
    column: Callable[[str, str | None], ColumnElement],
    binds: Mapping[str, object] | None = None,
) -> ColumnElement[bool] | None:
    """Parse and compile ``text``; None for an empty expression (no constraint)."""
    node = parse_where(text)
    if node is None:
        return None
    return compile_where(node, types=types, column=column, binds=binds, text=text)


def evaluate_where(
    node: Node | None,
    values: Callable[[str, str | None], object],
    binds: Mapping[str, object] | None = None,
    *,
    types: Mapping[str, Mapping[str | None, type]] | None = None,
    text: str = "",
) -> bool:
    """Evaluate ``node`` in Python for one data ID; ``values(dimension, attribute)`` gives its values.

    Uses SQL's three-valued logic (a comparison with None/NULL is unknown, NOT unknown is unknown, and only
    TRUE selects), so it agrees with ``compile_where`` on the same data. With ``types`` the expression is
    checked exactly as ``compile_where`` does; without, bare names in ``binds`` are binds and others columns.
    A None node is TRUE.
    """
    if node is None:
        return True
    resolved = _Resolver(types, binds, text).node(node)

    def get(dim: _Dim) -> object:
        value = values(dim.ident.dimension, dim.ident.attribute)
        return None if isinstance(value, float) and math.isnan(value) else value  # SQLite stores NaN as NULL

    def ev(r: _Resolved) -> bool | None:
        if isinstance(r, _RBool):
            result: bool | None = r.is_and
            for child in r.operands:
                v = ev(child)
                if v is None:
                    result = None
                elif v is not r.is_and:  # False decides an AND, True decides an OR
                    return v
            return result
        if isinstance(r, _RNot):
            v = ev(r.operand)
            return None if v is None else not v
        if isinstance(r, _RCompare):
            a = get(r.left)
            b = get(r.right) if isinstance(r.right, _Dim) else r.right.value
            if a is None or b is None:
                return None
            try:
                return bool(_PY_OPS[r.op](a, b))
            except TypeError:
                _fail(f"cannot compare {_describe_value(a)} with {_describe_value(b)}", r.column, text)
        if not r.values:
            return r.negated  # x IN () is false and x NOT IN () true, even for NULL x
        a = get(r.left)
        if a is None:
            return None
        if any(v is not None and a == v for v in r.values):
            return not r.negated
        return None if any(v is None for v in r.values) else r.negated

    return ev(resolved) is True
