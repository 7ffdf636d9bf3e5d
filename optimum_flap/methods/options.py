"""How a method declares its options: a dataclass of `option` fields, checked when it is built.

One declaration gives `FlapConfig` its fields and validation and the command line its flags, types,
choices, defaults and help. This module imports no torch, so ``optimum-flap --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any


def option(default: Any, help: str, choices: tuple[str, ...] | None = None, minimum: float | None = None) -> Any:
    """A method option: its default, one line of help (shown by ``--help``), allowed values or lower bound.

    `minimum` is inclusive for ints (1 means "a positive int") and exclusive for floats (0 means "> 0").
    """
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum})


@dataclass
class MethodOptions:
    """Base of a method's options. Subclasses are dataclasses whose fields are made with `option`.

    Values are checked against the field's type hint (bool, int, float, str; `| None` allows None),
    its choices and its minimum when the object is built; `check` adds rules across fields.
    """

    def __post_init__(self) -> None:
        for spec in option_specs(type(self)):
            value = getattr(self, spec.name)
            if not spec.accepts(value):
                raise ValueError(f"FlapConfig: invalid {spec.name}={value!r}; allowed: {spec.allowed}.")
        self.check()

    def check(self) -> None:
        """Rules across fields (e.g. a structure that needs a head count); raise `ValueError`."""

    def implied_pruning_ratio(self) -> float | None:
        """The ratio the options fix (an N:M pattern's 1 - N/M), the default of `pruning_ratio`; None if free."""
        return None

    def check_pruning_ratio(self, ratio: float) -> None:
        """Refuse a `pruning_ratio` the options contradict; raise `ValueError`."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class OptionSpec:
    """What the config, its validation and the command line need to know about one option."""

    name: str
    type: type  # bool, int, float or str
    optional: bool  # None is allowed
    default: Any
    help: str
    choices: tuple[str, ...] | None
    minimum: float | None

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.choices is not None:
            return value in self.choices
        if self.type is bool:
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.type is float else self.type):
            return False
        if self.type is float and not value < float("inf"):
            return False
        if self.minimum is None:
            return True
        return value >= self.minimum if self.type is int else value > self.minimum

    @property
    def allowed(self) -> str:
        """The allowed values in words, for error messages."""
        if self.choices is not None:
            text = ", ".join(self.choices)
        elif self.type is bool:
            text = "True or False"
        elif self.type is int:
            text = "a positive int" if self.minimum == 1 else "an int" + (
                f" >= {self.minimum}" if self.minimum is not None else "")
        elif self.type is float:
            text = "a finite number" + (f" > {self.minimum}" if self.minimum is not None else "")
        else:
            text = "a string"
        return f"None or {text}" if self.optional else text


@functools.cache
def option_specs(options_class: type[MethodOptions]) -> tuple[OptionSpec, ...]:
    """The options of a `MethodOptions` class, in declaration order."""
    hints = typing.get_type_hints(options_class)
    specs = []
    for field in dataclasses.fields(options_class):
        members = typing.get_args(hints[field.name]) or (hints[field.name],)
        value_types = [t for t in members if t is not type(None)]
        specs.append(OptionSpec(
            name=field.name, type=value_types[0], optional=len(value_types) < len(members), default=field.default,
            help=field.metadata["help"], choices=field.metadata["choices"], minimum=field.metadata["minimum"],
        ))
    return tuple(specs)


@dataclass
class StructuredOptions(MethodOptions):
    """Options of every method that removes whole head groups and MLP channels: floors, rounding, compensation.

    Subclasses override `bias_compensation` to set their method's default.
    """

    bias_compensation: bool = option(False, "fold the mean contribution of removed channels into the output bias")
    min_head_groups: int = option(1, "key/value head groups every layer keeps", minimum=1)
    min_channels: int = option(1, "MLP channels every layer keeps", minimum=1)
    round_to: int | None = option(None, "make kept MLP widths multiples of this (hardware-aligned widths, e.g. 128); "
                                  "unset keeps exact widths", minimum=1)
