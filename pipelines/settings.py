"""Read pipelines/settings.mk, the settings, pinned versions and method table that Make (which
includes the file) and pipelines/Snakefile (through this module) share. Standard library only.

The file is a small subset of Make, and anything outside it is refused rather than guessed at:

    # a comment, on a line of its own
    NAME ?= value          a setting: Snakemake's config key is the name in lower case
    NAME := value          a constant (referring only to variables set above it, as Make
                           expands it at once)
    NAME = value           a constant expanded where used
    NAME = a long \\
      value                continued: the backslash, newline and spaces around them are one space

Values may refer to other variables as $(NAME), expanded as Make expands them (given names such
as RUN come from the caller).

    python3 pipelines/settings.py [NAME=VALUE ...]   # every variable, expanded, as NAME=value

GRAMMAR below is what each setting accepts, for both engines: the Snakefile decides by
`refusal` (for a config key in lower case), and Make by

    python3 pipelines/settings.py check NAME=VALUE ...

which prints `NAME='value' must be <what is wanted>` for the first value refused, and nothing
when every one passes (the top-level Makefile's settings checks).
"""

import math
import re
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "settings.mk"

_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*(\?=|:=|=)[ \t]*(.*)")
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class SettingsError(ValueError):
    pass


# --- What each setting accepts -------------------------------------------------------------------
# One grammar per setting for Make and Snakemake. A number is written as the stages' parsers read
# it, ASCII only; a whole number without a sign or leading zeros where a stamp or a command records
# the text (SEED=07 remade everything SEED=7 had made, the stages reading both as 7). THREADS is
# recorded nowhere. A list (KS, STRATA) is written with commas, as the stages take it (--k 3,6,9;
# Snakemake's lists are joined so first).
_WHOLE = r"0|[1-9][0-9]*"
_POSITIVE = r"[1-9][0-9]*"
# A decimal number as Rust's f64 parser reads it (apply-prune --budget's fraction, fit-surrogate
# --ridge-alpha), without inf and nan and without a minus sign; the value is then checked too
# (`finite`, `positive`), as the stages check it: 1e999 is infinite and 1e-400 zero to them.
_DECIMAL = r"\+?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"


def _decimal(text, positive):
    if not re.fullmatch(_DECIMAL, text):
        return False
    value = float(text)
    return math.isfinite(value) and (value > 0 if positive else value >= 0)


def _budget(text):
    """apply-prune --budget (crates/selection/src/frontier.rs, Budget::from_str): least, sleb, a
    positive finite fraction of SLEB's cost (0.5sleb, 1e-1sleb), or a number of evaluations
    above 0 (without a sign or leading zeros here)."""
    if text in ("least", "sleb") or re.fullmatch(_POSITIVE, text):
        return True
    return text.endswith("sleb") and _decimal(text[:-len("sleb")], positive=True)


def _pattern(pattern):
    return lambda text: re.fullmatch(pattern, text) is not None


def _listed(item):
    return _pattern(rf"({item})(,({item}))*")


# NAME -> (accepts(text) -> bool, what is wanted). The wording is Make's messages'; the Snakefile
# words its own refusals, naming its config key (pipelines/Snakefile, check_config).
GRAMMAR = {
    "CALIB_WINDOWS": (_pattern(_POSITIVE), "must be a number of windows (1 or more)"),
    "EVAL_WINDOWS": (_pattern(_POSITIVE), "must be a number of windows (1 or more)"),
    # A window's first token is context only (each token is scored on the ones before it): one of
    # a single token scores nothing, and prepare-tokens refuses a --seq-len under 2.
    "SEQ_LEN": (_pattern(r"[2-9]|[1-9][0-9]+"), "must be a number of tokens per window: 2 or more (a window's "
                "first token is only context for the next; prepare-tokens --seq-len)"),
    "SEED": (_pattern(_WHOLE), "must be a seed (a whole number: 0 or more, without leading zeros)"),
    "THREADS": (_pattern(r"[0-9]+"), "must be a number of threads (0 = all cores)"),
    "BOS": (_pattern(r"auto|off"), "must be auto or off"),
    # Snakemake also takes cuda:{shard} (shard I on GPU I), which has no meaning to Make.
    "DEVICE": (_pattern(r"cpu|cuda|cuda:[0-9]+"), "must be cpu or cuda or cuda:N"),
    "ADAPTIVE_BUDGET": (_budget, "must be sleb or a fraction of it (0.5sleb or 1e-1sleb: above 0) or least or a "
                        "number of LLM evaluations (1 or more, without leading zeros: apply-prune --budget)"),
    "SURROGATE_RIDGE": (lambda text: _decimal(text, positive=False),
                        "must be a ridge penalty: a number 0 or more (0.01 or 1e-3: fit-surrogate --ridge-alpha)"),
    "CALIB_DOCUMENTS": (_pattern(r"[0-9]*:[0-9]*"), "must be a range of LAMBADA passages start:end (half-open; "
                        "either side optional: prepare-tokens --documents)"),
    "EVAL_DOCUMENTS": (_pattern(r"[0-9]*:[0-9]*"), "must be a range of LAMBADA passages start:end (half-open; "
                       "either side optional: prepare-tokens --documents)"),
    "MASKS": (_pattern(_POSITIVE), "must be a number of masks: 1 or more, without leading zeros "
              "(sample-masks --stratified-masks)"),
    # Empty: the published strata, scaled. A stratum of 0 is the full model (sample-masks takes it).
    "STRATA": (lambda text: text == "" or _listed(_WHOLE)(text),
               "must be numbers of removed blocks separated by commas (2,5,8; each 0 or more, without "
               "leading zeros), or empty for the default strata (sample-masks --strata)"),
    "KS": (_listed(_POSITIVE), "must be numbers of blocks to remove separated by commas (3,6,9; each 1 or "
           "more, without leading zeros: apply-prune --k)"),
    "K_PRUNED": (_pattern(_POSITIVE), "must be a number of blocks to remove: 1 or more, without leading zeros "
                 "(one of KS)"),
}


def refusal(name, value):
    """What is wrong with `value` for the setting NAME (upper case), as Make says it, or None
    when it is accepted. A value is taken as its text (a Snakemake config's number too)."""
    accepts, wanted = GRAMMAR[name]
    return None if accepts(_text(value)) else f"{name}='{_text(value)}' {wanted}"


class Settings:
    """The variables of a settings file, in file order: name -> (operator, unexpanded value)."""

    def __init__(self, path=DEFAULT):
        self.path = Path(path)
        self.variables = {}
        for number, line in _logical_lines(self.path):
            where = f"{self.path}:{number}"
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            match = _ASSIGNMENT.fullmatch(line)
            if not match:
                raise SettingsError(f"{where}: not `NAME ?= value`, `NAME := value` or `NAME = value`: {line!r}")
            name, operator, value = match.groups()
            if "#" in value:
                raise SettingsError(f"{where}: a comment after a value (Make would keep the spaces before it)")
            if value != value.rstrip():
                raise SettingsError(f"{where}: spaces at the end of the value (Make would keep them)")
            if "$" in _REFERENCE.sub("", value):
                raise SettingsError(f"{where}: only $(NAME) references may follow a $: {value!r}")
            if name in self.variables:
                raise SettingsError(f"{where}: {name} is set twice")
            if operator == ":=":
                later = [n for n in _REFERENCE.findall(value) if n not in self.variables]
                if later:
                    raise SettingsError(f"{where}: {name} := refers to {', '.join(later)}, not set above "
                                        "(Make expands := at once; use = to expand where used)")
            self.variables[name] = (operator, value)

    def settings(self):
        """The overridable settings (`?=`) as a Snakemake config: lower-case key -> default."""
        return {name.lower(): value for name, (op, value) in self.variables.items() if op == "?="}

    def resolve(self, config=None, **given):
        """Every variable, expanded: settings from `config` (lower-case keys; a missing one takes
        the file's default), constants from the file, and the `given` names (e.g. RUN)."""
        config = config or {}
        raw = {}
        for name, (op, value) in self.variables.items():
            if op == "?=" and name.lower() in config:
                value = _text(config[name.lower()])
            raw[name] = value
        raw.update({name: _text(value) for name, value in given.items()})
        done = {}

        def expand(name, chain):
            if name in done:
                return done[name]
            if name not in raw:
                raise SettingsError(f"{self.path}: $({name}) is not defined ({' -> '.join(chain)})")
            if name in chain:
                raise SettingsError(f"{self.path}: $({name}) refers to itself ({' -> '.join(chain + [name])})")
            done[name] = _REFERENCE.sub(lambda m: expand(m.group(1), chain + [name]), raw[name])
            return done[name]

        return {name: expand(name, []) for name in raw}

    def table(self, prefix, config=None, **given):
        """The rows NAME<suffix> whose name starts with `prefix`, expanded: suffix -> value."""
        values = self.resolve(config, **given)
        return {name[len(prefix):]: value for name, value in values.items()
                if name.startswith(prefix) and name in self.variables}


def _logical_lines(path):
    """(first line number, line) with backslash-continued lines joined as Make joins them."""
    pending, start = None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if pending is not None:
            line = pending + " " + line.lstrip(" \t")
        else:
            start = number
        if line.endswith("\\"):
            if line.lstrip().startswith("#"):
                raise SettingsError(f"{path}:{number}: a comment ending in a backslash (Make would "
                                    "continue it onto the next line)")
            pending = line[:-1].rstrip(" \t")
            continue
        pending = None
        yield start, line
    if pending is not None:
        yield start, pending


def _text(value):
    """A config value as the text Make would hold: a list space-separated, None empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def _check(arguments):
    """`check NAME=VALUE ...`: the first value refused, as Make's $(error) says it; exit status 1."""
    for argument in arguments:
        name, _, value = argument.partition("=")
        refused = refusal(name, value)
        if refused:
            print(refused)
            return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["check"]:
        sys.exit(_check(sys.argv[2:]))
    given = dict(arg.split("=", 1) for arg in sys.argv[1:])
    for name, value in Settings().resolve(**given).items():
        print(f"{name}={value}")
