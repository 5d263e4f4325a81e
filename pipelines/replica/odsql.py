"""A subset of ODSQL (OpenDataSoft's query language), compiled to DuckDB SQL for the replica.

Covers what the client and the tests use: comparisons (with `date'…'` literals), AND/OR/NOT,
parentheses, `is [not] null`, `[not] in (…)` and `in [a..b]`, `like`, `year()`, and for
`select` the aggregates count/min/max/sum/avg with `as` aliases. Values always travel as
bound parameters; field names are checked against the dataset's columns before they are quoted.
Anything else raises ODSQLError with the portal's message shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<date>date\s*(?P<dq>['"])(?P<dval>.*?)(?P=dq))
  | (?P<str>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")
  | (?P<num>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<range>\.\.)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),\[\]*])
  | (?P<bq>`[^`]+`)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE | re.IGNORECASE,
)

KEYWORDS = {"and", "or", "not", "is", "null", "in", "like", "as", "asc", "desc", "true", "false"}
AGGREGATES = {"count", "min", "max", "sum", "avg"}
SCALAR_FUNCS = {"year": "year", "lower": "lower", "upper": "upper", "length": "length"}


class ODSQLError(ValueError):
    """Raised for a query the portal would refuse with HTTP 400 `ODSQLError`."""

    def __init__(self, detail: str, clause: str):
        super().__init__(
            f"ODSQL query is malformed: {detail} Clause(s) containing the error(s): {clause}."
        )


@dataclass
class Tok:
    kind: str
    value: str
    raw: str


@dataclass
class Compiled:
    sql: str
    params: list = field(default_factory=list)


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1])


def _date_literal(value: str, clause: str) -> str:
    """ODS accepts date'2022', date'2022-06', date'2022/06/07' and date'2017-04-03T08:02'."""
    v = value.strip().replace("/", "-")
    m = re.fullmatch(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?(?:[T ](\d{1,2}):(\d{2})(?::(\d{2}))?.*)?", v)
    if not m:
        raise ODSQLError(f"invalid date literal date'{value}'", clause)
    y, mo, d, hh, mi, ss = m.groups()
    date = f"{int(y):04d}-{int(mo or 1):02d}-{int(d or 1):02d}"
    if hh is None:
        return date
    return f"{date} {int(hh):02d}:{int(mi):02d}:{int(ss or 0):02d}"


def tokenize(text: str, clause: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise ODSQLError(f"unexpected character {text[pos]!r} at position {pos}", clause)
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        raw = m.group(0)
        if kind == "date":
            toks.append(Tok("date", _date_literal(m.group("dval"), clause), raw))
        elif kind == "str":
            toks.append(Tok("str", _unescape(raw), raw))
        elif kind == "bq":
            toks.append(Tok("ident", raw[1:-1], raw))
        elif kind == "ident" and raw.lower() in KEYWORDS:
            toks.append(Tok("kw", raw.lower(), raw))
        else:
            toks.append(Tok(kind, raw, raw))
    return toks


class _Parser:
    def __init__(self, text: str, columns: dict[str, str], clause: str):
        self.toks = tokenize(text, clause)
        self.i = 0
        self.columns = columns
        self.clause = clause
        self.params: list = []

    # -- token helpers
    def peek(self, offset: int = 0) -> Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def accept(self, kind: str, value: str | None = None) -> Tok | None:
        t = self.peek()
        if t and t.kind == kind and (value is None or t.value.lower() == value):
            self.i += 1
            return t
        return None

    def expect(self, kind: str, value: str | None = None) -> Tok:
        t = self.accept(kind, value)
        if not t:
            got = self.peek()
            raise ODSQLError(
                f"expected {value or kind} but found {got.raw if got else 'end of query'}", self.clause
            )
        return t

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def fail_trailing(self) -> None:
        if not self.done():
            raise ODSQLError(f"unexpected {self.peek().raw!r}", self.clause)

    # -- grammar
    def boolean(self) -> str:
        left = self.conjunction()
        while self.accept("kw", "or"):
            left = f"({left} OR {self.conjunction()})"
        return left

    def conjunction(self) -> str:
        left = self.negation()
        while self.accept("kw", "and"):
            left = f"({left} AND {self.negation()})"
        return left

    def negation(self) -> str:
        if self.accept("kw", "not"):
            return f"(NOT {self.negation()})"
        return self.predicate()

    def predicate(self) -> str:
        t = self.peek()
        if t and t.kind == "punct" and t.value == "(":
            # Parenthesised boolean expression.
            self.i += 1
            inner = self.boolean()
            self.expect("punct", ")")
            return inner
        if t and t.kind == "str" and not self._is_comparison_ahead():
            # A bare string is a full-text search over every text field.
            self.i += 1
            return self._search(t.value)
        left = self.operand()
        if self.accept("kw", "is"):
            negate = bool(self.accept("kw", "not"))
            self.expect("kw", "null")
            return f"({left} IS {'NOT ' if negate else ''}NULL)"
        negate = bool(self.accept("kw", "not"))
        if self.accept("kw", "in"):
            return f"({'NOT ' if negate else ''}{self._in(left)})"
        if self.accept("kw", "like"):
            pattern = self.expect("str").value
            self.params.append(f"%{pattern}%")
            return f"({'NOT ' if negate else ''}CAST({left} AS VARCHAR) ILIKE ?)"
        if negate:
            raise ODSQLError("NOT must precede IN or LIKE here", self.clause)
        op = self.accept("op")
        if not op:
            got = self.peek()
            raise ODSQLError(f"expected an operator after {left} but found {got.raw if got else 'end of query'}", self.clause)
        right = self.operand()
        sql_op = "!=" if op.value == "<>" else op.value
        return f"({left} {sql_op} {right})"

    def _is_comparison_ahead(self) -> bool:
        nxt = self.peek(1)
        return bool(nxt and (nxt.kind == "op" or (nxt.kind == "kw" and nxt.value in ("is", "in", "like", "not"))))

    def _search(self, text: str) -> str:
        text_cols = [c for c, t in self.columns.items() if t == "VARCHAR"]
        if not text_cols:
            return "FALSE"
        parts = []
        for c in text_cols:
            self.params.append(f"%{text}%")
            parts.append(f'"{c}" ILIKE ?')
        return "(" + " OR ".join(parts) + ")"

    def _in(self, left: str) -> str:
        if self.accept("punct", "["):
            lo = self.operand()
            self.expect("range")
            hi = self.operand()
            self.expect("punct", "]")
            return f"({left} >= {lo} AND {left} <= {hi})"
        self.expect("punct", "(")
        items = [self.operand()]
        while self.accept("punct", ","):
            items.append(self.operand())
        self.expect("punct", ")")
        return f"({left} IN ({', '.join(items)}))"

    def operand(self) -> str:
        t = self.peek()
        if t is None:
            raise ODSQLError("unexpected end of query", self.clause)
        self.i += 1
        if t.kind == "str":
            self.params.append(t.value)
            return "?"
        if t.kind == "num":
            self.params.append(float(t.value) if "." in t.value else int(t.value))
            return "?"
        if t.kind == "date":
            self.params.append(t.value)
            return "CAST(? AS TIMESTAMP)" if " " in t.value else "CAST(? AS DATE)"
        if t.kind == "kw" and t.value in ("true", "false"):
            return t.value.upper()
        if t.kind == "ident":
            name = t.value
            if self.accept("punct", "("):
                return self._call(name.lower())
            return self.field(name)
        raise ODSQLError(f"unexpected {t.raw!r}", self.clause)

    def field(self, name: str) -> str:
        if name not in self.columns:
            raise ODSQLError(f"Unknown field: {name}", self.clause)
        return f'"{name}"'

    def _call(self, fn: str) -> str:
        if fn in AGGREGATES:
            if self.clause == "where":
                raise ODSQLError(f"aggregation function {fn}() is not allowed in where", self.clause)
            if fn == "count" and self.accept("punct", "*"):
                self.expect("punct", ")")
                return "count(*)"
            arg = self.operand()
            self.expect("punct", ")")
            return f"{fn}({arg})"
        if fn in SCALAR_FUNCS:
            arg = self.operand()
            self.expect("punct", ")")
            return f"{SCALAR_FUNCS[fn]}({arg})"
        raise ODSQLError(f"{fn}() is not a known function", self.clause)


def compile_where(text: str | None, columns: dict[str, str]) -> Compiled:
    """`columns` maps column name to DuckDB type name."""
    if not text or not text.strip():
        return Compiled("TRUE")
    p = _Parser(text, columns, "where")
    sql = p.boolean()
    p.fail_trailing()
    return Compiled(sql, p.params)


@dataclass
class CompiledSelect:
    sql: str
    params: list
    names: list[str]
    is_aggregate: bool


def compile_select(text: str | None, columns: dict[str, str]) -> CompiledSelect:
    if not text or text.strip() == "*":
        names = list(columns)
        return CompiledSelect(", ".join(f'"{c}"' for c in names), [], names, False)
    p = _Parser(text, columns, "select")
    parts, names, aggregate = [], [], False
    while True:
        if p.accept("punct", "*"):
            parts.extend(f'"{c}"' for c in columns)
            names.extend(columns)
        else:
            start = p.i
            expr = p.operand()
            aggregate |= any(t.kind == "ident" and t.value.lower() in AGGREGATES for t in p.toks[start:p.i])
            if p.accept("kw", "as"):
                alias = p.expect("ident").value
            elif expr.startswith('"'):
                alias = expr.strip('"')
            else:
                alias = "".join(t.raw for t in p.toks[start:p.i])
            parts.append(f'{expr} AS "{alias}"')
            names.append(alias)
        if not p.accept("punct", ","):
            break
    p.fail_trailing()
    return CompiledSelect(", ".join(parts), p.params, names, aggregate)


def compile_order_by(text: str | None, columns: dict[str, str]) -> Compiled:
    """ODS puts nulls last in both directions."""
    if not text or not text.strip():
        return Compiled("")
    p = _Parser(text, columns, "order_by")
    parts = []
    while True:
        expr = p.operand()
        if p.accept("kw", "desc"):
            direction = "DESC"
        else:
            p.accept("kw", "asc")
            direction = "ASC"
        parts.append(f"{expr} {direction} NULLS LAST")
        if not p.accept("punct", ","):
            break
    p.fail_trailing()
    return Compiled(", ".join(parts), p.params)
