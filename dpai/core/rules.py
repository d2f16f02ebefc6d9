"""Value rules for parameters (each names what it allows, so every error can say it) and
`Section`, the dataclass base of every parameter block: a params.yaml section or a method's options.

    rule = real(0, 1)                 # a number in [0, 1]
    rule.validate("mask.dpai.alpha", "abc")
    -> ValueError: mask.dpai.alpha='abc' is invalid: allowed is a number in [0, 1]
"""
import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar


@dataclass(frozen=True)
class Rule:
    allowed: str                      # what a person reads in the error
    test: Callable[[Any], bool]

    def validate(self, key: str, value):
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


def text() -> Rule:
    return Rule("a non-empty string", lambda v: isinstance(v, str) and v != "")


def param(default, rule: Rule | None = None, help: str = ""):
    """A Section field: its default, the Rule its value must pass, one line of help."""
    meta = {"rule": rule, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """Base of a dataclass holding one block of parameters (a section of params.yaml, or a
    method's options). Every field's Rule is checked at construction, so a library caller and
    the pipeline get the same one-line error: `<KEY>.<field>=<value> is invalid: allowed is ...`.
    `validate()` holds rules between fields. `from_dict` builds it from a params.yaml block,
    naming an unknown or a missing key."""

    KEY: ClassVar[str] = ""

    def __post_init__(self):
        for f in fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                rule.validate(self.key(f.name), getattr(self, f.name))
        self.validate()

    def validate(self) -> None:
        """Rules between fields (raise ValueError naming the key, the value, what is allowed)."""

    @classmethod
    def key(cls, name: str = "") -> str:
        return f"{cls.KEY}.{name}" if cls.KEY and name else (cls.KEY or name)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, block, *, complete: bool = True):
        """From a mapping; complete=True (params.yaml): every field must be given."""
        block = {} if block is None and not complete else block
        if not isinstance(block, dict):
            raise ValueError(f"{cls.key()}={block!r} is invalid: allowed is a mapping of "
                             f"{cls.names()}")
        for name in block:
            if name not in cls.names():
                raise ValueError(f"{cls.key(name)} is not a parameter; allowed: "
                                 f"{sorted(cls.names())}")
        if complete:
            for name in cls.names():
                if name not in block:
                    raise ValueError(f"{cls.key(name)} is missing from params.yaml")
        return cls(**block)

    def to_dict(self) -> dict:
        return asdict(self)
