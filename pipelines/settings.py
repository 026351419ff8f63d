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
"""

import re
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "settings.mk"

_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*(\?=|:=|=)[ \t]*(.*)")
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class SettingsError(ValueError):
    pass


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


if __name__ == "__main__":
    given = dict(arg.split("=", 1) for arg in sys.argv[1:])
    for name, value in Settings().resolve(**given).items():
        print(f"{name}={value}")
