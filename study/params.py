"""The search space of a study spec: what each parameter may take, shared or per family.

A ``search_space`` entry is a parameter (``beta: {type: float, low: 1, high: 16, log: true}``), or,
in a study that searches ``family``, a mapping of one family's own parameters
(``factor_vae: {gamma: {type: categorical, choices: [10, 20, 30]}}``), sampled only for trials of
that family. :class:`SpaceEntry` flattens both into one list: each entry's ``key`` is the trial's
config key and the tables' column (``beta``, ``factor_vae.gamma``), ``family`` the family it applies
to (None: every trial), ``field`` what it sets in that family's config or the training settings.
This module imports neither Ray nor Optuna (:mod:`study.space` turns entries into a searcher).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag, field_validator, model_validator

__all__ = ["RangeParam", "FloatParam", "IntParam", "CategoricalParam", "FixedParam", "ParamSpec", "FamilySpace", "SearchEntry",
           "SpaceEntry", "FAMILY_KEY", "space_entries", "grid_points", "grid_size"]

FAMILY_KEY = "family"  # the search-space entry that chooses each trial's model family

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RangeParam(BaseModel):
    """A number searched in ``[low, high]`` (both inclusive), log-uniformly when ``log``."""

    model_config = _FROZEN
    log: bool = False

    @model_validator(mode="after")
    def _check(self):
        if not self.low < self.high:
            raise ValueError(f"`low < high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs `low > 0`, but got low={self.low}")
        return self

    def values_to_check(self) -> list[Any]:
        return [self.low, self.high]


class FloatParam(RangeParam):
    """A float searched in ``[low, high]``, log-uniformly when ``log``."""

    type: Literal["float"]
    low: float
    high: float


class IntParam(RangeParam):
    """An int searched in ``[low, high]`` (both inclusive), log-uniformly when ``log``."""

    type: Literal["int"]
    low: int
    high: int


class CategoricalParam(BaseModel):
    """One of ``choices``; the only kind (with ``fixed``) grid search takes."""

    model_config = _FROZEN
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _one_kind(cls, value: list[Any]) -> list[Any]:
        kinds = {_kind(choice) for choice in value}
        if len(kinds) > 1:
            raise ValueError(f"choices must all be of one kind (numbers, strings, booleans or lists), "
                             f"but got {sorted(kinds)}")
        if any(choice is None for choice in value):
            raise ValueError("choices must not hold null")
        return value

    def values_to_check(self) -> list[Any]:
        return list(self.choices)


class FixedParam(BaseModel):
    """A value held fixed (a search-space entry that is not searched)."""

    model_config = _FROZEN
    type: Literal["fixed"]
    value: Any

    def values_to_check(self) -> list[Any]:
        return [self.value]


def _kind(value: Any) -> str:
    """The kind of a categorical choice as a parquet column sees it (ints and floats are numbers)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


ParamSpec = Annotated[Union[FloatParam, IntParam, CategoricalParam, FixedParam], Field(discriminator="type")]


class FamilySpace(RootModel[dict[str, ParamSpec]]):
    """One family's own parameters (``search_space.<family>``), sampled only for its trials."""

    model_config = ConfigDict(frozen=True)


def _entry_kind(value: Any) -> str:
    """``param`` for a parameter (a mapping with a ``type``), ``family`` for a family's own space."""
    if isinstance(value, FamilySpace):
        return "family"
    if isinstance(value, dict) and "type" not in value and value and all(isinstance(v, (dict, BaseModel))
                                                                         for v in value.values()):
        return "family"
    return "param"


SearchEntry = Annotated[Union[Annotated[ParamSpec, Tag("param")], Annotated[FamilySpace, Tag("family")]],
                        Discriminator(_entry_kind)]


@dataclass(frozen=True)
class SpaceEntry:
    """One parameter of the flattened search space.

    Attributes:
        key: The trial config's key and the tables' column (``beta``, ``factor_vae.gamma``).
        param: What it may take.
        family: The family whose trials it applies to; None: every trial.
        field: What it sets: a family config field (``gamma``, ``tasks.y.weight``), a training field
            (``lr``), a dataset option (``dataset.train_fraction``) or the family itself (``family``).
    """

    key: str
    param: ParamSpec
    family: str | None
    field: str

    @property
    def searched(self) -> bool:
        return not isinstance(self.param, FixedParam)

    def applies(self, family: str | None) -> bool:
        """Whether a trial of ``family`` has this parameter."""
        return self.family is None or self.family == family


def space_entries(search_space: dict[str, Any]) -> list[SpaceEntry]:
    """The flattened entries of a validated ``search_space``, shared ones first, in spec order."""
    entries = [SpaceEntry(key, p, None, key) for key, p in search_space.items() if not isinstance(p, FamilySpace)]
    for family, space in search_space.items():
        if isinstance(space, FamilySpace):
            entries += [SpaceEntry(f"{family}.{field}", p, family, field) for field, p in space.root.items()]
    return entries


def _choices(entry: SpaceEntry) -> list[Any]:
    return list(entry.param.choices) if isinstance(entry.param, CategoricalParam) else [entry.param.value]


def grid_points(entries: list[SpaceEntry], families: list[str]) -> list[dict[str, Any]]:
    """Every configuration of a grid (categorical and fixed entries only): for each family, the
    product of the shared entries' choices and that family's own, in spec order.

    Returns:
        One ``{key: value}`` per configuration, with ``family`` when the family is searched.
    """
    searched_family = any(e.key == FAMILY_KEY for e in entries)
    points = []
    for family in (families if searched_family else [None]):
        chosen = [e for e in entries if e.key != FAMILY_KEY and e.applies(family)]
        for values in itertools.product(*(_choices(e) for e in chosen)):
            point = {FAMILY_KEY: family} if searched_family else {}
            points.append({**point, **dict(zip((e.key for e in chosen), values))})
    return points


def grid_size(entries: list[SpaceEntry], families: list[str]) -> int:
    """Configurations of the grid of categorical choices (per family when families have their own)."""
    if not any(e.family for e in entries):
        return math.prod(len(e.param.choices) for e in entries if isinstance(e.param, CategoricalParam))
    return len(grid_points(entries, families))
