"""Value rules for parameters: each names what it allows, so every error can say it.

    rule = real(0, 1)                 # a number in [0, 1]
    rule.check("mask.dpai.alpha", "abc")
    -> ValueError: mask.dpai.alpha='abc' is invalid: allowed is a number in [0, 1]
"""
import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Rule:
    allowed: str                      # what a person reads in the error
    test: Callable[[Any], bool]

    def check(self, key: str, value):
        if not self.test(value):
            raise ValueError(f"{key}={value!r} is invalid: allowed is {self.allowed}")
        return value


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def real(lo=None, hi=None, *, lo_open=False, hi_open=False) -> Rule:
    """A finite number in the given range (closed unless *_open)."""
    def ok(v):
        if not is_real(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))
    if lo is None and hi is None:
        text = "a finite number"
    elif hi is None:
        text = f"a number {'>' if lo_open else '>='} {lo:g}"
    elif lo is None:
        text = f"a number {'<' if hi_open else '<='} {hi:g}"
    else:
        text = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return Rule(text, ok)


def integer(lo=None) -> Rule:
    return Rule("an integer" if lo is None else f"an integer >= {lo}",
                lambda v: is_int(v) and (lo is None or v >= lo))


def one_of(*values) -> Rule:
    return Rule(f"one of {list(values)}", lambda v: v in values)


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def optional(rule: Rule) -> Rule:
    return Rule(f"null or {rule.allowed}", lambda v: v is None or rule.test(v))


def like(default) -> Rule | None:
    """The rule implied by a default value's type (None: no constraint can be inferred)."""
    if isinstance(default, bool):
        return boolean()
    if isinstance(default, int):
        return integer()
    if isinstance(default, float):
        return real()
    if isinstance(default, str):
        return Rule("a string", lambda v: isinstance(v, str))
    return None
