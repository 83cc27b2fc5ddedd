"""Registry of model families: a family name maps to its config class and module class.

Families register themselves with :func:`register` when :mod:`trainables.families` is
imported; the loop and the spec look them up with :func:`get_family`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel
from torch import nn

from trainables.protocol import supports

__all__ = ["Family", "register", "get_family", "family_names"]


@dataclass(frozen=True)
class Family:
    """A registered model family.

    Attributes:
        name: Registry key used in study specs (``family.name``).
        config_cls: Pydantic config class (``frozen``, ``extra="forbid"``).
        model_cls: ``nn.Module`` subclass built as ``model_cls(config, input_shape)``.
        epoch_metrics: Metric names the training loop reports every epoch for any config of it.
    """

    name: str
    config_cls: type[BaseModel]
    model_cls: type[nn.Module]
    epoch_metrics: tuple[str, ...]

    def reported_metrics(self, config: BaseModel | None = None) -> tuple[str, ...]:
        """Per-epoch metric names for one config: :attr:`epoch_metrics` plus those that depend on
        the config (the model class's ``config_metrics(config)``, e.g. a multitask model's
        ``val_y_auc``)."""
        if config is None or not supports(self.model_cls, "config_metrics"):
            return self.epoch_metrics
        return self.epoch_metrics + tuple(self.model_cls.config_metrics(config))


_FAMILIES: dict[str, Family] = {}


def register(name: str, config_cls: type[BaseModel], *, loss_terms: tuple[str, ...]) -> Callable:
    """Class decorator registering a model family under ``name``.

    Args:
        name: Registry key.
        config_cls: The family's pydantic config class.
        loss_terms: Names of the scalar terms of the model's output besides ``loss``
            (e.g. ``("recon_loss", "kl")``); the loop reports ``train_<term>`` and
            ``val_<term>`` for each, plus ``train_loss``, ``val_loss``, and ``val_elbo`` when the
            terms include ``recon_loss`` and ``kl``.

    Raises:
        ValueError: If ``name`` is already registered.
    """

    def decorate(model_cls: type[nn.Module]) -> type[nn.Module]:
        if name in _FAMILIES:
            raise ValueError(f"family {name!r} is already registered")
        terms = ("loss",) + tuple(loss_terms)
        metrics = tuple(f"{split}_{term}" for split in ("train", "val") for term in terms)
        if {"recon_loss", "kl"} <= set(terms):
            metrics += ("val_elbo",)
        _FAMILIES[name] = Family(name, config_cls, model_cls, metrics)
        return model_cls

    return decorate


def family_names() -> list[str]:
    """Names of all registered families, sorted."""
    _load()
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    """Looks up a registered family.

    Raises:
        KeyError: If no family of that name is registered; the message lists the known ones.
    """
    _load()
    if not isinstance(name, str):
        raise KeyError(f"expected a family name, got a {type(name).__name__}; expected one of {sorted(_FAMILIES)}")
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; expected one of {sorted(_FAMILIES)}") from None


def _load() -> None:
    """Imports every module of :mod:`trainables.families`; each registers its family."""
    import importlib
    import pkgutil

    import trainables.families as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
