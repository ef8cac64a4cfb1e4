"""Typed, ranged settings: how a ``--set key=value`` string (or a Python value) becomes a value.

One place says what each setting may hold: :class:`Setting` gives its type, its range and an
example. The training config (:mod:`robustzoo.config`) declares one per key, an objective
declares the ranges of its own settings (``Objective.ranges``), and both are checked where
the value enters — ``--set``, a CLI option, a keyword of the Python API, a config.json —
before any data is loaded or a model is built. A bad value is one line that names the key,
the value, what is allowed and a value that works.

No torch here: ``robustzoo train --help`` lists the keys without importing it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

KINDS = ("float", "int", "bool", "str", "floats", "names")
NONE_WORDS = ("none", "null")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_number(text: str, name: str = "value") -> float:
    """Parse '0.03', '8/255' or '2e-3' into a finite float.

    Raises:
        UsageError: not a number, a division by zero, or NaN/infinity; the message names
            ``name`` (the option or setting) and gives an example.
    """
    raw = text
    text = text.strip()
    example = "give a number such as 0.1, 2e-3 or 8/255"
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except ZeroDivisionError:
        raise UsageError(f"{name} {raw!r} divides by zero; {example}") from None
    except ValueError:
        raise UsageError(f"{name} {raw!r} is not a number; {example}") from None
    if not math.isfinite(value):
        raise UsageError(f"{name} {raw!r} is not a finite number; {example}")
    return value


def coerce(value: Any, default: Any, key: str) -> Any:
    """Convert a ``--set`` string to the type of ``default`` (bool, int, float, str, list)."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    try:
        if isinstance(default, bool):
            low = value.strip().lower()
            if low in TRUE_WORDS:
                return True
            if low in FALSE_WORDS:
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return parse_number(value, key)
        if isinstance(default, (list, tuple)):
            return [parse_number(v, key) for v in value.split(",") if v.strip()]
    except UsageError:
        raise
    except ValueError:
        raise UsageError(f"{key}={value!r} is not a valid {type(default).__name__}") from None
    return value


def kind_of(default: Any) -> str:
    """The :data:`KINDS` name of a default value (an objective's settings are typed by them)."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, (list, tuple)):
        return "floats"
    return "str"


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Setting:
    """The type and range of one setting.

    Attributes:
        kind: 'float', 'int', 'bool', 'str', 'floats' (comma-separated numbers) or 'names'
            (a comma-separated list of names); '' = the type of the objective's default.
        min, max: bounds (None: unbounded); ``min_open`` / ``max_open`` exclude them.
        optional: None is allowed (not set: the dataset's or recipe's default applies).
        none_means: what ``--set key=none`` means, for settings a user may set to None (''
            = 'none' is not accepted from the command line).
        choices: the allowed values of a 'str' (or of each element of 'names').
        nonempty: a 'str' or a list must not be empty.
        meaning: what the setting is, with units (for messages and ``train --help``).
        example: a valid value, as typed.
        option: the command-line option that sets it besides ``--set`` (e.g. '--alpha').
    """

    kind: str = ""
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    optional: bool = False
    none_means: str = ""
    choices: tuple[Any, ...] = ()
    nonempty: bool = False
    meaning: str = ""
    example: str = ""
    option: str = ""

    def describe(self, kind: str | None = None) -> str:
        """What the setting may hold, e.g. 'a number > 0 and <= 1', 'an integer >= 1 or none'."""
        kind = kind or self.kind or "str"
        if self.choices and kind in ("str", "names"):
            text = "one of " + ", ".join(map(str, self.choices))
            if kind == "names":
                text = "a comma-separated list of names" + (", at least one" if self.nonempty else "")
        else:
            text = {"float": "a number", "int": "an integer", "bool": "true or false",
                    "str": "a non-empty text" if self.nonempty else "a text",
                    "floats": "a comma-separated list of numbers",
                    "names": "a comma-separated list of names" + (", at least one" if self.nonempty else ""),
                    }[kind]
            bounds = []
            if self.min is not None:
                bounds.append(f"{'>' if self.min_open else '>='} {_fmt(self.min)}")
            if self.max is not None:
                bounds.append(f"{'<' if self.max_open else '<='} {_fmt(self.max)}")
            if bounds:
                text += (" each " if kind == "floats" else " ") + " and ".join(bounds)
        return text + (f" or none ({self.none_means})" if self.none_means else "")

    def example_for(self, key: str) -> str:
        """How a user gives a working value: ``--alpha 2/255`` or ``--set val_size=100``."""
        ex = self.example or (str(self.choices[0]) if self.choices else "")
        if not ex:
            return ""
        return f"{self.option} {ex}" if self.option else f"--set {key}={ex}"

    # -- checking ------------------------------------------------------------------------------
    def parse(self, key: str, text: str, kind: str | None = None) -> Any:
        """Turn the string a user typed into a value of this setting's type (unchecked range)."""
        kind = kind or self.kind or "str"
        raw = text
        text = text.strip()
        if self.none_means and text.lower() in NONE_WORDS:
            return None
        try:
            if kind == "float":
                return parse_number(text, key)
            if kind == "int":
                return int(text, 10)
            if kind == "bool":
                if text.lower() in TRUE_WORDS:
                    return True
                if text.lower() in FALSE_WORDS:
                    return False
                raise ValueError(text)
            if kind == "floats":
                return [parse_number(v, key) for v in text.split(",") if v.strip()]
            if kind == "names":
                return [v.strip() for v in text.split(",") if v.strip()]
            return text
        except UsageError as exc:  # parse_number's own message, with the allowed range
            raise UsageError(f"{exc}; {key} must be {self.describe(kind)}") from None
        except ValueError:
            what = {"int": "an integer", "bool": "true or false"}.get(kind, kind)
            raise self.error(key, raw, f"is not {what}", kind) from None

    def problem(self, value: Any, kind: str | None = None) -> str | None:
        """Why a typed ``value`` is not allowed ('is out of range', ...), or None when it is."""
        kind = kind or self.kind or "str"
        if value is None:
            return None if self.optional else "is not set"
        if kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                return "is not a number" if kind == "float" else "is not an integer"
            if kind == "int" and not isinstance(value, numbers.Integral):
                return "is not an integer"
            if not math.isfinite(float(value)):
                return "is not a finite number"
            return None if self._in_range(value) else "is out of range"
        if kind == "bool":
            return None if isinstance(value, bool) else "is not true or false"
        if kind == "str":
            if not isinstance(value, str):
                return f"is a {type(value).__name__}, not a text"
            if self.nonempty and not value.strip():
                return "is empty"
            if self.choices and value not in self.choices:
                return "is not one of the choices"
            return None
        # lists
        if not isinstance(value, (list, tuple)):
            return f"is a {type(value).__name__}, not a list"
        if self.nonempty and not value:
            return "is empty"
        for v in value:
            if kind == "floats":
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
                    return f"holds {v!r}, which is not a finite number"
                if not self._in_range(v):
                    return f"holds {_fmt(v)}, which is out of range"
            elif not isinstance(v, str) or not v.strip():
                return f"holds {v!r}, which is not a name"
            elif self.choices and v not in self.choices:
                return f"holds {v!r}, which is not one of the choices"
        return None

    def _in_range(self, v: float) -> bool:
        if self.min is not None and (v < self.min or (self.min_open and v == self.min)):
            return False
        return not (self.max is not None and (v > self.max or (self.max_open and v == self.max)))

    def error(self, key: str, value: Any, problem: str, kind: str | None = None, who: str = "") -> UsageError:
        """The one-line UsageError: key, value, what is allowed, a value that works."""
        shown = value if isinstance(value, str) and value.strip() else _show(value)
        meaning = f" ({self.meaning})" if self.meaning else ""
        ex = self.example_for(key)
        return UsageError(f"{who}{key}={shown} {problem}: {key}{meaning} must be {self.describe(kind)}"
                          + (f"; e.g. {ex}" if ex else ""))

    def check(self, key: str, value: Any, kind: str | None = None, who: str = "") -> Any:
        """``value`` (a string is parsed first) if allowed, else the one-line UsageError."""
        if isinstance(value, str) and (kind or self.kind or "str") != "str":
            value = self.parse(key, value, kind)
        elif isinstance(value, str) and self.none_means and value.strip().lower() in NONE_WORDS:
            value = None
        why = self.problem(value, kind)
        if why is not None:
            raise self.error(key, value, why, kind, who)
        if (kind or self.kind) == "float" and value is not None:
            value = float(value)
        elif (kind or self.kind) == "floats" and value is not None:
            value = [float(v) for v in value]
        elif (kind or self.kind) == "names" and value is not None:
            value = list(value)
        return value


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value) if value else "''"
    if value is None:
        return "none"
    if isinstance(value, str):
        return repr(value)
    return _fmt(value) if isinstance(value, float) else str(value)
