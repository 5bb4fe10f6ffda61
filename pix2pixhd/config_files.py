"""YAML in and out for configs, and the `section.key=value` strings of `--set`.

Values read from a file or a command line may be hostile: the reader refuses alias bombs and
deep nesting before they cost memory or a traceback, and `shown` cuts any value short before it
goes into a message. `config.py` turns what is read here into a checked `Config`.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

from pix2pixhd.files import write_atomically

MAX_YAML_ALIASES = 16
"""YAML aliases (`*name`) one file or value may use: each can repeat a whole earlier value, so
a few hundred bytes of aliases to aliases describe billions of items."""
MAX_YAML_DEPTH = 16
"""Nesting a config may have (it needs 3: section, option, list); deeper is refused before
Python's recursion limit turns it into a traceback."""


class ConfigError(ValueError):
    """A configuration value or key that cannot be used."""


class _LimitedLoader(yaml.SafeLoader):
    """YAML's safe loader with at most MAX_YAML_ALIASES aliases and MAX_YAML_DEPTH levels."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise ConfigError(f"uses more than {MAX_YAML_ALIASES} YAML aliases (*name)")
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise ConfigError(f"nests values more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as Python values, refusing alias bombs and deep nesting, in one line."""
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except ConfigError as error:
        raise ConfigError(f"{source} {error}; a config needs neither") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not readable YAML ({shown(str(error))})") from None
    finally:
        loader.dispose()


def read_config_file(path: Path) -> dict[str, Any]:
    """The sections a YAML config file holds (an empty file holds none)."""
    try:
        values = parse_yaml(path.read_text(), f"config {path}") or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"config {path} is not readable YAML ({error})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} holds a {type(values).__name__}, not a mapping of "
                          "sections (data, model, loss, train); write one with `save_config`")
    return values


def write_config_file(values: dict[str, Any], path: str | Path) -> None:
    """Written atomically; a `path` that is a symbolic link is replaced, not written through."""
    text = yaml.safe_dump(values, sort_keys=False)
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def split_override(item: str) -> tuple[str, str, str]:
    """(section, key, value as written) of a `section.key=value` string."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"override {shown(item)} is not of the form section.key=value")
    dotted, raw = item.split("=", 1)
    section, key = dotted.split(".", 1)
    return section, key, raw


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 2


def shown(value: Any, length: int = 80) -> str:
    """`repr(value)` cut short: a value read from a file may be huge, or an alias bomb whose
    whole repr would take minutes and gigabytes."""
    text = _SHORT.repr(value)
    return text if len(text) <= length else text[: length - 3] + "..."
