"""Registry of model families: a family name maps to its config class and module class.

Each family's module (``trainables/families/<name>.py``) registers it with :func:`register`;
the loop and the spec look families up with :func:`get_family`, which imports that module only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel
from torch import nn

from datasets.registry import Registry
from trainables.protocol import supports

__all__ = ["Family", "FAMILIES", "register", "get_family", "family_names"]


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


FAMILIES: Registry[Family] = Registry("family", "trainables.families")


def register(name: str, config_cls: type[BaseModel], *, loss_terms: tuple[str, ...]) -> Callable:
    """Class decorator registering a model family under ``name`` (its module is
    ``trainables/families/<name>.py``).

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
        terms = ("loss",) + tuple(loss_terms)
        metrics = tuple(f"{split}_{term}" for split in ("train", "val") for term in terms)
        if {"recon_loss", "kl"} <= set(terms):
            metrics += ("val_elbo",)
        FAMILIES.add(name, Family(name, config_cls, model_cls, metrics))
        return model_cls

    return decorate


def family_names() -> list[str]:
    """Names of all registered families, sorted."""
    return FAMILIES.names()


def get_family(name: str) -> Family:
    """Looks up a registered family.

    Raises:
        KeyError: If no family of that name is registered; the message lists the known ones.
    """
    return FAMILIES.get(name)
