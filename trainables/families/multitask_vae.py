"""Multitask VAE: the conv VAE plus one small MLP head per supervised task on the latent mean.

Each task reads a dataset column (a class label such as the jets' quark/gluon ``y`` or the dSprites
``shape``, or a continuous target such as the jet mass ``m0``) and adds ``weight * task_loss`` to
the beta-VAE objective, so the labels shape the latent space while the ELBO terms stay as in
:class:`~trainables.families.conv_vae.ConvVAE`::

    loss = recon_loss + beta * kl + sum_t weight_t * loss_t

With every weight 0 the model is the plain conv VAE with heads trained on nothing. Searching the
weights (``search_space: {tasks.y.weight: ...}``) against ``val_recon_loss`` traces the trade-off
between reconstruction and what the latents predict.

References:
    Kingma, Rezende, Mohamed, Welling 2014, "Semi-Supervised Learning with Deep Generative
    Models", NeurIPS, arXiv:1406.5298, eq. 9 (a labelled-data term added to the bound, weighted).
    Higgins et al. 2017, ICLR, eq. 4 (the beta-weighted KL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Callable, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from trainables.families.conv_vae import ConvVAE, ConvVAEConfig
from trainables.likelihoods import gaussian_nll
from trainables.nets import MLP
from trainables.registry import register
from trainables.vae import VAEOutput

__all__ = ["TaskConfig", "MultitaskVAEConfig", "MultitaskVAE", "classification_scores", "regression_mae"]

MIN_LOG_SIGMA = -7.0  # floor of a gaussian_nll head's log-sigma (standardised units): no collapse to -inf


class TaskConfig(BaseModel):
    """One supervised task read from the latent mean.

    Regression targets are standardised as ``(target - center) / scale`` before the loss, so that
    a target in hundreds of GeV (jet ``m0``, ``pt``) costs about as much as a class label; set
    ``center``/``scale`` to roughly the training mean and standard deviation (``data.json`` of a
    study holds the data statistics). Predictions and ``<task>_mae`` are in the original units.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["classify", "regress"]
    column: str | None = None  # dataset column holding the target; None: the task's own name
    classes: int | None = Field(None, ge=2, le=10_000)  # classify only: labels are 0 .. classes-1
    weight: float = Field(1.0, ge=0.0, le=1e4)  # multiplies the task loss (0: the head learns nothing)
    # regress only: mse (squared error of the standardised target) or gaussian_nll (the head also
    # predicts a log-sigma: a heteroscedastic Gaussian NLL in nats of the standardised target).
    loss: Literal["mse", "gaussian_nll"] = "mse"
    center: float = Field(0.0, ge=-1e12, le=1e12)  # regress only: subtracted from the target
    scale: float = Field(1.0, gt=0.0, le=1e12)  # regress only: the standardised target is (t - center) / scale

    @model_validator(mode="after")
    def _fields_match_kind(self) -> TaskConfig:
        if self.kind == "classify" and self.classes is None:
            raise ValueError("classes: a classify task needs the number of classes (>= 2)")
        if self.kind == "regress" and self.classes is not None:
            raise ValueError(f"classes: applies to classify tasks, but got classes={self.classes} for a regress task")
        if self.kind == "classify" and (self.loss != "mse" or self.center != 0.0 or self.scale != 1.0):
            raise ValueError(
                f"loss, center and scale apply to regress tasks, but got loss={self.loss!r}, "
                f"center={self.center}, scale={self.scale} for a classify task"
            )
        return self


class MultitaskVAEConfig(ConvVAEConfig):
    """Hyperparameters of :class:`MultitaskVAE`: the conv VAE's, the tasks, and the head widths."""

    # Task name -> task; the name names the metrics (val_<name>_auc, val_<name>_mae, <name>_loss).
    # Empty: a plain conv VAE.
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)
    # One hidden layer of 64: the heads should read what the latents hold, not compute features.
    head_widths: tuple[Annotated[int, Field(gt=0, le=4096)], ...] = Field((64,), max_length=4)

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        for name, task in tasks.items():
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"task names must be identifiers (letters, digits, _), but got {name!r}")
            if name == "recon":
                raise ValueError("task name 'recon' would report as recon_loss, the reconstruction term; rename it")
            if (task.column or name) == "image":
                raise ValueError(f"tasks.{name}.column: 'image' is the observation, not a target column")
        return tasks


def _classify_loss(task: TaskConfig, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ``(B,)`` in nats of labels ``target`` ``(B,)`` given logits ``out`` ``(B, classes)``."""
    return F.cross_entropy(out, target.long(), reduction="none")


def _regress_loss(task: TaskConfig, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss ``(B,)`` of the standardised target given head outputs ``out`` ``(B, 1)`` or ``(B, 2)``.

    ``mse``: ``(mean - t)^2``; ``gaussian_nll``: ``-log N(t; mean, sigma^2)`` with the head's
    ``log sigma`` (floored at :data:`MIN_LOG_SIGMA`), in nats of the standardised target (the NLL in
    original units is larger by ``log(scale)``).
    """
    t = ((target - task.center) / task.scale).unsqueeze(1)  # (B, 1)
    return _REGRESS_LOSSES[task.loss](out, t)


_REGRESS_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda out, t: (out[:, :1] - t).pow(2).squeeze(1),
    "gaussian_nll": lambda out, t: gaussian_nll(out[:, :1], t, out[:, 1:].clamp(min=MIN_LOG_SIGMA)),
}


def _classify_predict(task: TaskConfig, out: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, classes)``."""
    return torch.softmax(out, dim=1)


def _regress_predict(task: TaskConfig, out: torch.Tensor) -> torch.Tensor:
    """Predicted target ``(B,)`` in the column's original units."""
    return out[:, 0] * task.scale + task.center


class _Kind(NamedTuple):
    """What a task kind does: its loss, its predictions, its head's width, its validation scores."""

    loss: Callable[[TaskConfig, torch.Tensor, torch.Tensor], torch.Tensor]
    predict: Callable[[TaskConfig, torch.Tensor], torch.Tensor]
    outputs: Callable[[TaskConfig], int]
    scores: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    score_names: tuple[str, ...]


_KINDS: dict[str, _Kind] = {
    "classify": _Kind(_classify_loss, _classify_predict, lambda task: task.classes,
                      lambda pred, target: classification_scores(pred, target.astype(np.int64)), ("accuracy", "auc")),
    "regress": _Kind(_regress_loss, _regress_predict, lambda task: {"mse": 1, "gaussian_nll": 2}[task.loss],
                     lambda pred, target: {"mae": regression_mae(pred, target)}, ("mae",)),
}


@register("multitask_vae", MultitaskVAEConfig, loss_terms=("recon_loss", "kl"))
class MultitaskVAE(ConvVAE):
    """:class:`ConvVAE` with an MLP head per task reading the posterior mean ``mu``.

    The heads read ``mu`` rather than a sampled ``z``: predictions are deterministic, and task
    gradients reach the encoder. Every head stays in the graph (its loss times its weight, even 0),
    so each parameter gets a gradient, as DDP requires.

    Args:
        config: The family's hyperparameters.
        input_shape: ``(C, H, W)``, as for :class:`ConvVAE`.
    """

    def __init__(self, config: MultitaskVAEConfig, input_shape: Sequence[int]):
        super().__init__(config, input_shape)
        self.heads = nn.ModuleDict({
            name: MLP(config.latent_dim, config.head_widths, _KINDS[task.kind].outputs(task), config.activation)
            for name, task in config.tasks.items()
        })

    @classmethod
    def config_metrics(cls, config: MultitaskVAEConfig) -> tuple[str, ...]:
        """Per-epoch metrics of ``config``'s tasks: ``train_/val_<task>_loss``, and
        ``val_<task>_accuracy``, ``val_<task>_auc`` (classify) or ``val_<task>_mae`` (regress)."""
        names: list[str] = []
        for name, task in config.tasks.items():
            names += [f"train_{name}_loss", f"val_{name}_loss"]
            names += [f"val_{name}_{score}" for score in _KINDS[task.kind].score_names]
        return tuple(names)

    @classmethod
    def check_setup(cls, config: MultitaskVAEConfig, training, data) -> None:
        """The conv VAE's input check; each task's column must exist, a classify task's class
        count must match its column's labels."""
        super().check_setup(config, training, data)
        for name, task in config.tasks.items():
            column = task.column or name
            if column not in data.columns:
                raise ValueError(f"family.tasks.{name}.column: the dataset has no column {column!r} "
                                 f"(columns: {sorted(data.columns)})")
            if data.columns[column] not in ((), (1,)):
                raise ValueError(f"family.tasks.{name}.column: {column!r} holds {data.columns[column]} values per row; "
                                 "a task reads one number per row")
            if task.kind == "classify":
                classes = data.classes.get(column)
                if classes is None:
                    raise ValueError(f"family.tasks.{name}.classes: column {column!r} does not hold class "
                                     "indices 0, 1, ...")
                if classes != task.classes:
                    raise ValueError(f"family.tasks.{name}.classes: column {column!r} holds {classes} classes "
                                     f"(0 .. {classes - 1}), but got classes={task.classes}")

    def _target(self, name: str, task: TaskConfig, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        column = task.column or name
        if column not in batch:
            raise ValueError(
                f"tasks.{name}.column: the dataset has no column {column!r} (columns: {sorted(batch)})"
            )
        return batch[column].reshape(-1).float()  # (B,)

    def forward(self, batch: dict[str, torch.Tensor]) -> VAEOutput:
        """The conv VAE's output with the weighted task losses added to ``loss``.

        Returns:
            :class:`VAEOutput` whose ``extra`` holds ``<task>_loss`` (batch mean) per task and whose
            ``predictions`` hold, in eval mode, per task, ``<task>.pred`` (class probabilities ``(B, classes)``,
            or predicted values ``(B,)`` in original units) and ``<task>.target`` ``(B,)``.
        """
        out = super().forward(batch)
        loss = out.loss
        extra = dict(out.extra)
        predictions = dict(out.predictions)
        for name, task in self.config.tasks.items():
            kind = _KINDS[task.kind]
            head_out = self.heads[name](out.mu)  # (B, outputs)
            target = self._target(name, task, batch)
            term = kind.loss(task, head_out, target).mean()
            loss = loss + task.weight * term
            extra[f"{name}_loss"] = term
            if not self.training:  # scored after evaluation passes only
                predictions[f"{name}.pred"] = kind.predict(task, head_out).detach()
                predictions[f"{name}.target"] = target.detach()
        return replace(out, loss=loss, extra=extra, predictions=predictions)

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per task: class probabilities ``(B, classes)`` or values ``(B,)`` in original units."""
        mu, _ = self.encode_batch(batch)
        return {name: _KINDS[task.kind].predict(task, self.heads[name](mu)) for name, task in self.config.tasks.items()}

    def validation_metrics(self, predictions: dict[str, torch.Tensor]) -> dict[str, float]:
        """Scores of the concatenated validation predictions (``forward``'s ``predictions``).

        Returns:
            ``<task>_accuracy`` and ``<task>_auc`` (see :func:`classification_scores`) for classify
            tasks, ``<task>_mae`` (see :func:`regression_mae`) for regress tasks.
        """
        results: dict[str, float] = {}
        for name, task in self.config.tasks.items():
            pred = predictions[f"{name}.pred"].double().numpy()
            target = predictions[f"{name}.target"].double().numpy()
            scores = _KINDS[task.kind].scores(pred, target)
            results.update({f"{name}_{key}": value for key, value in scores.items()})
        return results


def classification_scores(probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Accuracy and ROC AUC of class probabilities.

    Args:
        probs: float ``(N, C)`` class probabilities, rows summing to 1, ``C >= 2``.
        target: int ``(N,)`` labels in ``0 .. C-1``.

    Returns:
        ``{"accuracy": fraction of argmax == target in [0, 1], "auc": ROC AUC in [0, 1]}``; for
        ``C > 2`` the AUC is one-vs-rest, macro-averaged over classes (sklearn ``roc_auc_score``,
        ``multi_class="ovr"``). The AUC is NaN when a class is missing from ``target`` (undefined).

    References:
        Fawcett 2006, "An introduction to ROC analysis", Pattern Recognition Letters 27(8).
    """
    from sklearn.metrics import roc_auc_score

    accuracy = float(np.mean(probs.argmax(axis=1) == target))
    num_classes = probs.shape[1]
    if len(np.unique(target)) < num_classes:
        return {"accuracy": accuracy, "auc": math.nan}
    if num_classes == 2:
        auc = roc_auc_score(target, probs[:, 1])
    else:
        probs = probs / probs.sum(axis=1, keepdims=True)  # softmax in float32 sums to 1 only to ~1e-7
        auc = roc_auc_score(target, probs, multi_class="ovr", labels=np.arange(num_classes))
    return {"accuracy": accuracy, "auc": float(auc)}


def regression_mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error ``mean |pred - target|``, in the target's units (>= 0).

    Args:
        pred: float ``(N,)`` predictions.
        target: float ``(N,)`` true values.
    """
    return float(np.mean(np.abs(pred - target)))
