"""The method registry: method name -> its options class and its implementation.

A method is one folder under `optimum_flap/methods/`. Its `config.py` declares the method's options
once (a `MethodOptions` dataclass: defaults, allowed values, help), and its `__init__.py` registers
them together with the implementation class, named as ``"module:Class"`` and imported only when a run
needs it (the way peft maps a tuner name to its config and model classes). So `FlapConfig`, the
command line and ``optimum-flap --help`` learn every method's options without importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .options import MethodOptions, option_specs


@dataclass(frozen=True)
class RegisteredMethod:
    name: str
    options: type[MethodOptions]
    #: ``"package.module:Class"``, imported on first use
    implementation: str
    summary: str


_REGISTRY: dict[str, RegisteredMethod] = {}


def register_method(name: str, options: type[MethodOptions], implementation: str, summary: str) -> None:
    """Make `name` a valid `FlapConfig(method=name)` with the fields of `options`.

    Args:
        name: the method name users write (``"flap"``, ``"cfsp"``...).
        options: the dataclass of the method's own options (`MethodOptions` subclass).
        implementation: the hook class (see `optimum_flap.methods.base`) as ``"module:Class"``;
            imported lazily by `get_method_class`, so registering costs no torch import.
        summary: one line for ``optimum-flap prune --help``.
    """
    if name in _REGISTRY and _REGISTRY[name] != RegisteredMethod(name, options, implementation, summary):
        raise ValueError(f"Method {name!r} is already registered with {_REGISTRY[name].options.__name__}.")
    if ":" not in implementation:
        raise ValueError(f"implementation={implementation!r}; allowed: 'package.module:ClassName'.")
    _REGISTRY[name] = RegisteredMethod(name, options, implementation, summary)


def registered_methods() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_registered_method(name: str) -> RegisteredMethod:
    """The registration of `name`; `ValueError` listing the registered methods otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"FlapConfig: invalid method={name!r}; allowed: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def get_method_class(name: str) -> type:
    """The implementation class of method `name`, imported now (this is where torch gets imported)."""
    module_name, class_name = get_registered_method(name).implementation.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def methods_with_option(option_name: str) -> tuple[str, ...]:
    """The registered methods that have an option called `option_name`."""
    return tuple(m.name for m in _REGISTRY.values() if any(s.name == option_name for s in option_specs(m.options)))
