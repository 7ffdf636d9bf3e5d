"""What `FlapConfig` and `RecoveryConfig` share: keyword fields validated at construction, errors that
name the field, the value and what is allowed, and dict/JSON round trips.

The fields are the `__init__` parameters, so the serialised form can never drift from the constructor
(`FlapConfig` adds the chosen method's options, declared in the method's folder).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from collections.abc import Sequence
from typing import Any

from .privacy import is_recorded_dataset

NAMED_DATASETS = ("wikitext2", "c4")


class Recipe:
    """Base of the package's config classes; subclasses define `__init__` (the fields) and `validate`."""

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return tuple(p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD)

    @classmethod
    def _fail(cls, field: str, value: Any, allowed: str) -> ValueError:
        return ValueError(f"{cls.__name__}: invalid {field}={value!r}; allowed: {allowed}.")

    def validate(self) -> None:
        raise NotImplementedError

    def _validate_dataset(self) -> None:
        """`dataset` must be a named dataset, an existing file, texts or token ids (see `optimum_flap.data`)."""
        dataset = self.dataset
        if isinstance(dataset, str):
            # a recipe read back from a checkpoint names its calibration file by name and hash
            if dataset in NAMED_DATASETS or os.path.isfile(dataset) or is_recorded_dataset(dataset):
                return
            raise self._fail(
                "dataset", dataset,
                f"{', '.join(repr(n) for n in NAMED_DATASETS)}, an existing local file "
                "(.txt/.raw/.tokens/.jsonl/.json), a list of strings or a list of token-id lists",
            )
        if isinstance(dataset, Sequence) and len(dataset) > 0:
            if all(isinstance(item, str) for item in dataset) or hasattr(dataset[0], "__len__"):
                return
        if getattr(dataset, "ndim", 0) == 2:
            return
        raise self._fail("dataset", type(dataset).__name__, "a dataset name, a local file, a non-empty list of "
                         "strings or a non-empty list of token-id lists")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field; an in-memory dataset is summarised, not copied."""
        out = {name: copy.deepcopy(getattr(self, name)) for name in self._field_names()}
        if not isinstance(self.dataset, str):
            out["dataset"] = f"<in-memory: {len(self.dataset)} items>"
        return out

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any):
        return cls(**{**config_dict, **overrides})

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def is_int(value: Any) -> bool:
    """An int that is not a bool (`True` is an int to Python, never a valid count here)."""
    return isinstance(value, int) and not isinstance(value, bool)
