"""Value rules of a model's settings, read from the comments of its defaults YAML.

Why the comments: ``config/<Model>.yaml`` already says, key by key, what each setting
is. Making its opening bracket a rule keeps one place per model for default, meaning and
allowed values, so a planner can refuse ``k1: -3`` or ``sample_adj: B`` before any run
instead of a second list that drifts from the file. Reading it imports neither torch
nor RecBole (only ``ast`` and ``re``), so it is cheap enough to run on every spec.

The annotation is the bracket that opens a key's comment::

    n_layers: 3       # (int >= 1) LightGCN layers
    ot_mix: 0.5       # (float >= 0, <= 1) weight of the W loss
    sample_adj: A     # (str: A | A2 | cluster) where the k2 nodes come from
    ot_z1: mean       # (str|int: mean | mean1, >= -n_layers - 1, <= n_layers) anchor view
    layer_cl: 1       # (int >= 1, <= n_layers)
    # check: k1 + k2 >= 1

Grammar: ``(TYPES[: CHOICE | CHOICE ...][[,] OP BOUND[, OP BOUND ...]])``

- ``TYPES``: ``|``-separated among ``int`` (not a bool), ``float`` (any real number, an
  int too), ``bool``, ``str``, ``list``, ``dict``, ``none`` (YAML ``~``), ``any``, and
  ``list[T]`` (a list whose items are ``T``).
- ``CHOICES``: the strings allowed (a ``str`` value must be one of them).
- ``BOUND``: ``>=``, ``>``, ``<=`` or ``<`` and an arithmetic expression of numbers and
  other keys of the same config (``<= n_layers``); it applies to numbers (and to the
  items of a ``list[...]``). A bound naming a key the config lacks is not checked.
- A comment line ``# check: EXPR`` states a relation between keys: a comparison of two
  arithmetic sides (``k1 + k2 >= 1``), of a key with a string (``ot_z1 != "gat"``), or
  such comparisons (and keys holding a bool) joined by ``and``, ``or``, ``not``
  (``ot_normalize or ot_cost == "exp"``). A check naming a key the config lacks is not
  checked.

A string value is first read the way RecBole's ``Config`` reads the strings of a config
dict (``"-2"`` is the int -2, ``"true"`` is True), since that is what the model gets.

A key whose comment opens with no bracket has no rule here (a planner falls back on the
type of its default). A model can hold itself to the same rules in ``__init__``:
``read(default_config_file(name)).problem(config)``.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Check", "Rule", "Rules", "parse", "parse_check", "read", "from_default", "as_recbole_reads"]

_SCALARS = ("int", "float", "bool", "str", "none", "list", "dict", "any")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_AST_OPS = {ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Lt: "<", ast.Eq: "==", ast.NotEq: "!="}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
_KEY_LINE = re.compile(r"^(?P<key>[A-Za-z_][\w.-]*)\s*:(?P<rest>.*)$")
_CHECK_LINE = re.compile(r"^\s*#\s*check:\s*(?P<expr>.+?)\s*$")
_BOUND = re.compile(r"(>=|<=|>|<)\s*([^,]+)")


class _Missing(Exception):
    """A bound or check names a key the config does not have (or a non-number)."""


def as_recbole_reads(value: Any) -> Any:
    """``value`` as RecBole's ``Config`` hands it to a model: it evaluates the strings of a
    config dict (``_convert_config_dict``), so ``"-2"`` is -2 and ``"true"`` True. Done
    here with ``ast.literal_eval``, never ``eval``."""
    if not isinstance(value, str):
        return value
    try:
        out = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        low = value.lower()
        return True if low == "true" else False if low == "false" else value
    return out if isinstance(out, (str, int, float, list, tuple, dict, bool)) or out is None else value


def _type_name(value: Any) -> str:
    return "none" if value is None else type(value).__name__


def _is(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "none":
        return value is None
    if kind == "list":
        return isinstance(value, (list, tuple))
    if kind == "dict":
        return isinstance(value, dict)
    if kind.startswith("list["):
        inner = kind[5:-1]
        return isinstance(value, (list, tuple)) and all(_is(inner, v) for v in value)
    raise ValueError(f"unknown type {kind!r}")


def _evaluate(node: ast.AST, config: Mapping[str, Any]) -> float:
    """A number from an arithmetic expression over numbers and config keys."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, config)
    if isinstance(node, ast.Constant) and _is("float", node.value):
        return node.value
    if isinstance(node, ast.Name):
        value = as_recbole_reads(config.get(node.id))
        if not _is("float", value):
            raise _Missing(node.id)
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _evaluate(node.operand, config)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        return _BIN[type(node.op)](_evaluate(node.left, config), _evaluate(node.right, config))
    raise ValueError(f"unsupported expression {ast.unparse(node)!r}")


def _expression(text: str) -> ast.Expression:
    tree = ast.parse(text.strip(), mode="eval")
    for node in ast.walk(tree):
        ok = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.UnaryOp, ast.USub, ast.UAdd, ast.BinOp,
              ast.Compare, ast.BoolOp, ast.And, ast.Or, ast.Not, *_BIN, *_AST_OPS)
        if not isinstance(node, ok):
            raise ValueError(f"unsupported expression {text!r}")
    return tree


@dataclass(frozen=True)
class Rule:
    """What one setting accepts. ``problem`` says what is wrong with a value, or None."""

    types: tuple[str, ...] = ("any",)
    choices: tuple[str, ...] = ()
    bounds: tuple[tuple[str, str], ...] = ()  # (operator, expression text)
    fold_case: bool = False  # choices compared case-insensitively (RecBole lowercases some)
    _trees: tuple = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        for kind in self.types:
            if kind not in _SCALARS and not (kind.startswith("list[") and kind[5:-1] in _SCALARS):
                raise ValueError(f"unknown type {kind!r} (one of {', '.join(_SCALARS)} or list[T])")
        object.__setattr__(self, "_trees", tuple((op, _expression(text)) for op, text in self.bounds))

    def expected(self) -> str:
        """The rule in words, for messages: ``int >= 1``, ``str: A | A2 | cluster``."""
        text = "|".join(self.types)
        if self.choices:
            text += ": " + " | ".join(self.choices)
        if self.bounds:
            text += (", " if self.choices else " ") + ", ".join(f"{op} {b}" for op, b in self.bounds)
        return text

    def problem(self, value: Any, config: Mapping[str, Any] | None = None) -> str | None:
        """None when ``value`` is allowed, else a short phrase: ``must be >= 1, got -1``.
        A string is judged as RecBole reads it, and is also fine as the string itself
        (RecBole's own files hold ``fredom_type: None``, a str that a config dict would
        turn into None)."""
        read = as_recbole_reads(value)
        found = self._problem(read, config or {})
        if found and read is not value and self._problem(value, config or {}) is None:
            return None
        return found

    def _problem(self, value: Any, config: Mapping[str, Any]) -> str | None:
        if not any(_is(kind, value) for kind in self.types):
            return f"expected {self.expected()}, got {_type_name(value)} {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected {self.expected()}, got {value!r}"
        items = value if isinstance(value, (list, tuple)) and any(k.startswith("list[") for k in self.types) else [value]
        for item in items:
            if isinstance(item, str) and self.choices:
                names = {c.lower() if self.fold_case else c: c for c in self.choices}
                if (item.lower() if self.fold_case else item) not in names:
                    hint = difflib.get_close_matches(item, self.choices, n=1)
                    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                    return f"expected one of {' | '.join(self.choices)}, got {item!r}{extra}"
            if _is("float", item):
                for (op, text), (_, tree) in zip(self.bounds, self._trees):
                    try:
                        limit = _evaluate(tree, config)
                    except _Missing:
                        continue
                    if not _OPS[op](item, limit):
                        shown = text.strip()
                        if not re.fullmatch(r"[-+0-9.eE]+", shown):
                            shown += f" (= {limit:g})"
                        return f"must be {op} {shown}, got {item!r}"
        return None


@dataclass(frozen=True)
class Check:
    """A relation between settings (``k1 + k2 >= 1``) that must hold."""

    expr: str
    names: tuple[str, ...] = ()
    _tree: Any = field(default=None, compare=False, repr=False)

    def problem(self, config: Mapping[str, Any]) -> str | None:
        try:
            ok = _holds(self._tree.body, config)
        except _Missing:
            return None
        if ok:
            return None
        shown = ", ".join(f"{n}={as_recbole_reads(config.get(n))!r}" for n in self.names)
        return f"{self.expr} does not hold ({shown})"


def _side(node: ast.AST, config: Mapping[str, Any]) -> Any:
    """One side of a comparison: a string constant, a key holding a string, or a number."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        value = as_recbole_reads(config.get(node.id))
        if isinstance(value, (str, list, tuple)):
            return value
    return _evaluate(node, config)


def _holds(node: ast.AST, config: Mapping[str, Any]) -> bool:
    """Whether a check's expression holds for ``config``; raises :class:`_Missing`."""
    if isinstance(node, ast.BoolOp):
        values = [_holds(v, config) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _holds(node.operand, config)
    if isinstance(node, ast.Name):
        value = as_recbole_reads(config.get(node.id))
        if not isinstance(value, bool):
            raise _Missing(node.id)
        return value
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right = _side(node.left, config), _side(node.comparators[0], config)
        op = _AST_OPS[type(node.ops[0])]
        if op in ("==", "!="):
            return (left == right) == (op == "==")
        if isinstance(left, (str, list, tuple)) or isinstance(right, (str, list, tuple)):
            return False  # ordered comparisons are for numbers
        return _OPS[op](left, right)
    raise ValueError(f"unsupported check {ast.unparse(node)!r}")


def parse_check(text: str) -> Check:
    """``k1 + k2 >= 1`` or ``ot_normalize or ot_cost == "exp"`` -> a :class:`Check`:
    comparisons (one operator each) and bool keys, joined by ``and``, ``or``, ``not``."""
    tree = _expression(text)

    def ok(node) -> bool:
        if isinstance(node, ast.BoolOp):
            return all(ok(v) for v in node.values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ok(node.operand)
        return isinstance(node, ast.Name) or (isinstance(node, ast.Compare) and len(node.ops) == 1)

    if not ok(tree.body):
        raise ValueError(f"a check is a comparison, or comparisons joined by and/or/not, got {text!r}")
    found = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Name)), key=lambda n: n.col_offset)
    names = tuple(dict.fromkeys(n.id for n in found))  # in the order written: the first is blamed first
    return Check(text.strip(), names, tree)


def parse(annotation: str, fold_case: bool = False) -> Rule:
    """``(int >= 1)`` or ``int >= 1`` -> a :class:`Rule`. Raises ValueError when malformed."""
    text = annotation.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    m = re.match(r"(?P<types>[a-z]+(?:\[[a-z]+\])?(?:\s*\|\s*[a-z]+(?:\[[a-z]+\])?)*)\s*(?P<rest>.*)$", text)
    if not m:
        raise ValueError(f"annotation {annotation!r}: expected a type first (int, float, str, ...)")
    types = tuple(t.strip() for t in m["types"].split("|"))
    rest = m["rest"].strip()
    choices: tuple[str, ...] = ()
    if rest.startswith(":"):
        body = rest[1:]
        cut = re.search(r"(?:,\s*|\s)(?=(?:>=|<=|>|<))", body)
        part, rest = (body[: cut.start()], body[cut.start():]) if cut else (body, "")
        choices = tuple(c.strip() for c in part.split("|"))
        if not all(choices):
            raise ValueError(f"annotation {annotation!r}: an empty choice")
        rest = rest.strip()
    rest = rest.lstrip(",").strip()
    bounds = []
    for piece in filter(None, (p.strip() for p in rest.split(","))):
        b = _BOUND.fullmatch(piece)
        if not b:
            raise ValueError(f"annotation {annotation!r}: cannot read {piece!r} (expected e.g. '>= 1')")
        bounds.append((b[1], b[2].strip()))
    try:
        return Rule(types, choices, tuple(bounds), fold_case)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"annotation {annotation!r}: {err}") from None


def from_default(value: Any) -> Rule | None:
    """The rule a default value implies, the way RecBole's files mean it: an int default
    wants an int, a float default any number, a bool a bool, a str a str, a list a list
    (of what its items are, when they agree), a dict a dict. A list or dict may also be
    ``~`` (RecBole reads ``load_col: ~`` as "every column"). A ``~`` default tells nothing:
    None."""
    if value is None:
        return None
    for kind in ("bool", "int", "float", "str"):
        if _is(kind, value):
            return Rule((kind,))
    if isinstance(value, dict):
        return Rule(("dict", "none"))
    if isinstance(value, (list, tuple)):
        kinds = {k for k in ("bool", "int", "str") if value and all(_is(k, v) for v in value)}
        if "bool" in kinds:
            kinds = {"bool"}
        return Rule((f"list[{kinds.pop()}]" if len(kinds) == 1 else "list", "none"))
    return None


@dataclass(frozen=True)
class Rules:
    """A model's rules: per key, and the relations between keys."""

    rules: dict[str, Rule]
    checks: tuple[Check, ...] = ()

    def problem(self, config: Mapping[str, Any]) -> str | None:
        """``"key: what is wrong"`` for the first key of ``config`` its rule refuses (or the
        first relation that fails), else None: what a model can call in ``__init__`` to
        refuse what a planner would have refused, from the same file."""
        for key, rule in self.rules.items():
            if key in config:
                found = rule.problem(config[key], config)
                if found:
                    return f"{key}: {found}"
        for check in self.checks:
            found = check.problem(config)
            if found:
                return found
        return None


def _bracket(comment: str) -> str | None:
    """The balanced ``(...)`` that opens a comment, or None."""
    text = comment.lstrip()
    if not text.startswith("("):
        return None
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return text[: i + 1]
    raise ValueError(f"unbalanced '(' in {comment.strip()!r}")


def read(path: str | Path) -> Rules:
    """The rules written in a defaults YAML's comments (top-level keys only). A key with
    no annotation gets none here (callers fall back on :func:`from_default`); a malformed
    one raises ValueError naming the file and line."""
    rules: dict[str, Rule] = {}
    checks: list[Check] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        try:
            c = _CHECK_LINE.match(line)
            if c:
                checks.append(parse_check(c["expr"]))
                continue
            m = _KEY_LINE.match(line)
            if not m or "#" not in m["rest"]:
                continue
            bracket = _bracket(m["rest"].split("#", 1)[1])
            if bracket is not None:
                rules[m["key"]] = parse(bracket)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{path}:{number}: {err}") from None
    return Rules(rules, tuple(checks))
