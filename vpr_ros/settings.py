"""Settings described once, on the config dataclass that uses them.

A field made with :func:`setting` carries its default, a description and its range; the node's parameter
table (``vpr_ros/ros/parameters.py``), the command-line options (``vpr_ros/cli.py``) and the conversion
between flat dotted names (``sequence.length``, as ROS parameters and YAML use them) and the dataclass are
generated from it. A field made without :func:`setting` is internal: no parameter, no option.

The dotted prefix is the class's ``SETTINGS_PREFIX`` unless a caller names another (the PnP settings are
the node's ``metric.*``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

Scalar = bool | int | float | str
Config = TypeVar('Config')
_KEY = 'vpr_ros.setting'


@dataclass(frozen=True)
class About:
    """What a user is told about one setting, besides its default."""

    description: str
    low: float | None = None        # inclusive range of an int/float setting
    high: float | None = None
    read_only: bool = False         # the node reads it at start-up only
    name: str | None = None         # the parameter's last name part, when it is not the field's name
    choices: tuple[str, ...] = ()   # the values a str setting may take
    cli_help: str | None = None     # the command line's wording, where the description speaks of the node
    cli_flag: str | None = None     # the option's flag, where the generated one would not read well


def setting(default: Scalar, description: str, **about: Any) -> Any:
    """A dataclass field whose default, description and range (keywords of :class:`About`) are the one
    statement of this setting."""
    if not isinstance(default, (bool, int, float, str)):
        raise TypeError(f'a setting is a bool, int, float or str, got {default!r}')
    return field(default=default, metadata={_KEY: About(description, **about)})


@dataclass(frozen=True)
class Setting:
    """One described field of a config dataclass under its dotted name."""

    name: str        # 'sequence.length'
    field: str       # 'length'
    default: Scalar
    about: About


def settings_of(cls: type, prefix: str | None = None) -> tuple[Setting, ...]:
    """The described fields of ``cls``, in field order, named ``<prefix>.<name>`` (``''``: bare names)."""
    prefix = cls.SETTINGS_PREFIX if prefix is None else prefix
    dot = '.' if prefix else ''
    return tuple(Setting(f'{prefix}{dot}{about.name or f.name}', f.name, f.default, about)
                 for f in fields(cls) if (about := f.metadata.get(_KEY)) is not None)


def config_from_flat(cls: type[Config], values: Mapping[str, Any], prefix: str | None = None, *,
                     partial: bool = False, **fixed: Any) -> Config:
    """``cls`` from flat dotted values (every described field must be there unless ``partial``: the
    missing ones keep their defaults); ``fixed``: further fields by keyword."""
    described = settings_of(cls, prefix)
    if not partial:
        absent = [s.name for s in described if s.name not in values]
        if absent:
            raise KeyError(f'{cls.__name__} needs {", ".join(absent)}')
    return cls(**{s.field: values[s.name] for s in described if s.name in values}, **fixed)


def config_to_flat(config: Any, prefix: str | None = None) -> dict[str, Scalar]:
    """The described fields of a config dataclass as flat dotted values (the inverse of
    :func:`config_from_flat`)."""
    return {s.name: getattr(config, s.field) for s in settings_of(type(config), prefix)}


__all__ = ['About', 'Setting', 'config_from_flat', 'config_to_flat', 'setting', 'settings_of']
