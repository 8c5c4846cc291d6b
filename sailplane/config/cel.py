"""A syntax check of CEL expressions (github.com/google/cel-spec, the grammar
of ``doc/langdef.md`` and cel-go's ``CEL.g4``), for Telemetry
``accessLogging[].filter.expression``.

Envoy parses the expression when it takes the listener and NACKs it on a
syntax error, so one is reported at load time instead. This is a recognizer,
not an evaluator: it checks tokens (numbers, the string forms, reserved
words) and the grammar (operators, calls, selections, indexes, lists, maps,
messages, ``?:``), not types or names, which Envoy does not check either (an
unknown attribute makes the filter false at run time).
"""

from __future__ import annotations

import re
from collections.abc import Callable

MAX_DEPTH = 64  # nesting; cel-cpp's own limit is larger, Python's stack is the bound here
MAX_LENGTH = 16384

# As CEL.g4: these may not be identifiers.
_RESERVED = frozenset(
    [
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ]
)
_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"|'''|"|'))
  | (?P<float>(?:\d+\.\d+(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+))
  | (?P<int>(?:0[xX][0-9a-fA-F]+|\d+)[uU]?)
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>\|\||&&|<=|>=|==|!=|[<>+\-*/%!?:.,()\[\]{}])
    """,
    re.VERBOSE,
)
_RELATIONS = frozenset(("<", "<=", ">=", ">", "==", "!=", "in"))
_LITERAL_WORDS = frozenset(("true", "false", "null"))
# The functions Envoy 1.40's CEL has (each checked with `envoy --mode
# validate`): it fails a listener whose filter calls any other, and it has
# no comprehension macros (all, exists, exists_one, map, filter) nor
# `string()`. Arity and argument types are not checked here.
FUNCTIONS = frozenset(
    [
        "has",
        "size",
        "int",
        "uint",
        "double",
        "bytes",
        "bool",
        "timestamp",
        "duration",
        "type",
        "dyn",
        "matches",
        "startsWith",
        "endsWith",
        "contains",
        "getFullYear",
        "getMonth",
        "getDayOfYear",
        "getDayOfMonth",
        "getDate",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
    ]
)


class CelSyntaxError(ValueError):
    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (column {column + 1})")
        self.column = column


def _string_end(text: str, start: int, prefix: str) -> int:
    """The end of the string literal whose opening quote ends at ``start``."""
    quote = prefix.lstrip("rRbB")
    i = start
    while i < len(text):
        if text.startswith(quote, i):
            return i + len(quote)
        if len(quote) == 1 and text[i] in "\r\n":
            break
        # A backslash escapes the next character, in raw strings too as far as
        # Envoy's parser goes (it rejects r'a\').
        i += 2 if text[i] == "\\" else 1
    raise CelSyntaxError("unterminated string", start - len(prefix))


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, column); kinds: literal, ident, op, end."""
    out = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise CelSyntaxError(f"unexpected character {text[i]!r}", i)
        kind = m.lastgroup or ""
        if kind == "string":
            end = _string_end(text, m.end(), m.group())
            out.append(("literal", text[i:end], i))
            i = end
            continue
        if kind == "ident" and m.group() in _RESERVED:
            raise CelSyntaxError(f"{m.group()!r} is a reserved word", i)
        if kind in ("float", "int") or (kind == "ident" and m.group() in _LITERAL_WORDS):
            kind = "literal"
        if kind != "space":
            out.append((kind, m.group(), i))
        i = m.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0

    def peek(self, *values: str) -> bool:
        kind, value, _ = self.tokens[self.at]
        return kind in ("op", "ident") and value in values

    def take(self, *values: str) -> bool:
        if self.peek(*values):
            self.at += 1
            return True
        return False

    def fail(self, what: str) -> CelSyntaxError:
        kind, value, column = self.tokens[self.at]
        found = "the end of the expression" if kind == "end" else repr(value)
        return CelSyntaxError(f"expected {what}, found {found}", column)

    def expect(self, value: str) -> None:
        if not self.take(value):
            raise self.fail(repr(value))

    def ident(self) -> str:
        kind, value, _ = self.tokens[self.at]
        if kind != "ident" or value == "in":
            raise self.fail("a name")
        self.at += 1
        return value

    def call(self, name: str) -> None:
        """The arguments of ``name(``; no trailing comma in calls."""
        if name not in FUNCTIONS:
            raise CelSyntaxError(
                f"Envoy's CEL has no function {name!r}", self.tokens[self.at - 2][2]
            )
        if self.take(")"):
            return
        self.expr()
        while self.take(","):
            self.expr()
        self.expect(")")

    def expr(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CelSyntaxError("expression nested too deeply", self.tokens[self.at][2])
        self.binary(0)
        if self.take("?"):
            self.binary(0)
            self.expect(":")
            self.expr()
        self.depth -= 1

    _LEVELS: tuple[frozenset[str], ...] = (
        frozenset(("||",)),
        frozenset(("&&",)),
        _RELATIONS,
        frozenset(("+", "-")),
        frozenset(("*", "/", "%")),
    )

    def binary(self, level: int) -> None:
        if level == len(self._LEVELS):
            self.unary()
            return
        self.binary(level + 1)
        while self.take(*self._LEVELS[level]):
            self.binary(level + 1)

    def unary(self) -> None:
        while self.take("!", "-"):
            pass
        self.member()

    def member(self) -> None:
        self.primary()
        while True:
            if self.take("."):
                name = self.ident()
                if self.take("("):
                    self.call(name)
            elif self.take("["):
                self.expr()
                self.expect("]")
            else:
                return

    def items(self, close: str, item: Callable[[], None]) -> None:
        """Comma-separated items up to ``close``, a trailing comma allowed
        (and a lone one: ``[,]`` is an empty list in CEL.g4)."""
        if self.take(","):
            self.expect(close)
            return
        while not self.take(close):
            item()
            if not self.take(","):
                self.expect(close)
                return

    def map_entry(self) -> None:
        self.expr()
        self.expect(":")
        self.expr()

    def field_entry(self) -> None:
        self.ident()
        self.expect(":")
        self.expr()

    def primary(self) -> None:
        kind, _, _ = self.tokens[self.at]
        if kind == "literal":
            self.at += 1
        elif self.take("("):
            self.expr()
            self.expect(")")
        elif self.take("["):
            self.items("]", self.expr)
        elif self.take("{"):
            self.items("}", self.map_entry)
        elif kind == "ident" or self.peek("."):
            self.take(".")
            name = self.ident()
            if self.take("("):
                self.call(name)
                return
            while self.peek(".") and self.tokens[self.at + 1][0] == "ident":
                if not self._message_ahead():
                    return
                self.at += 1
                self.ident()
            if self.take("{"):
                self.items("}", self.field_entry)
        else:
            raise self.fail("a value, a name or '('")

    def _message_ahead(self) -> bool:
        """After ``a``: is ``.b.c{`` a message name (else selections)?"""
        i = self.at
        while self.tokens[i][1] == "." and self.tokens[i + 1][0] == "ident":
            i += 2
        return self.tokens[i][1] == "{" and self.tokens[i][0] == "op"


def check_cel(text: str) -> None:
    """Raise :class:`CelSyntaxError` unless ``text`` is one CEL expression."""
    if not text.strip():
        raise CelSyntaxError("the expression is empty", 0)
    if len(text) > MAX_LENGTH:
        raise CelSyntaxError(f"the expression is longer than {MAX_LENGTH} characters", 0)
    parser = _Parser(text)
    parser.expr()
    if parser.tokens[parser.at][0] != "end":
        raise parser.fail("an operator or the end of the expression")
