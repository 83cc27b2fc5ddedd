"""What the loop, the spec and the analysis may ask of a model, and what the loop asks of a session.

Every family's module has ``forward(batch) -> output``, a :class:`ModelOutput` (named scalar terms
through ``output.terms()``, ``loss`` among them, and per-sample ``predictions``). Everything else is
an *ability* a family may have: a method, or an attribute. :class:`ModelAbilities` lists them with
their contracts, and :func:`supports` is the one place that asks whether a model (or a model class)
has one. Asking for a name that is not an ability is a ``KeyError``, so a misspelt ability cannot
silently read as "not supported".

Method abilities are declared as methods of :class:`ModelAbilities`; a model has one when the
name is callable on it. Attribute abilities (``latent_dim``, ``num_classes``) are declared by
annotation; a model instance has one when it holds the attribute, a model class when it (or a
base class) declares it, by annotation or as a class attribute or property, so that the class
and its instances answer alike.

:class:`Session` is where the per-worker loop reports to, reads its data shards from and resumes
from (Ray Train, Ray Tune, or a test double): every attribute the loop uses is written there.

The encoder function of the disentanglement metrics (:func:`representation_fn`) belongs here,
with the model it wraps.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch

__all__ = ["ModelAbilities", "ModelOutput", "ABILITIES", "METHOD_ABILITIES", "ATTRIBUTE_ABILITIES", "Session",
           "Shard", "RestoredCheckpoint", "supports", "unwrap", "representation_fn"]


class ModelOutput(Protocol):
    """What every family's ``forward(batch)`` returns (``VAEOutput``, ``GANOutput``, ``Seq2SeqOutput``)."""

    loss: torch.Tensor  # scalar training objective, mean over the batch
    # Per-sample tensors (B, ...) by name, concatenated over a validation pass and handed to the
    # model's validation_metrics and the dataset's; {} for a model that predicts nothing.
    predictions: dict[str, torch.Tensor]

    def terms(self) -> dict[str, torch.Tensor]:
        """The scalar loss terms by name, ``loss`` among them (reported as ``train_<name>``, ``val_<name>``)."""


class ModelAbilities(Protocol):
    """The optional abilities of a family's module (and class methods of its class).

    A family implements those that apply to it; the loop, the spec's checks and the report use
    :func:`supports` to ask.

    Attributes:
        latent_dim: Width of the code ``z`` (int >= 1): the last dimension of ``encode``'s
            ``(mu, logvar)`` and of the codes ``decode`` and ``generate`` take.
        num_classes: Classes a conditional model conditions on (int >= 1); its labels lie in
            ``[0, num_classes)``, and its ``sample(num, generator, labels=...)`` takes labels
            ``(num,)``.
        memory_format: The memory format the model trains faster in on the CPU
            (``torch.channels_last`` for the conv families: ``benchmarks/precision.py``); the loop
            puts its parameters in it (convolutions then run in it whatever their input's format).
    """

    latent_dim: int
    num_classes: int
    memory_format: torch.memory_format

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``(B, ...)`` float32 -> posterior ``(mu, logvar)``, each float32 ``(B, latent_dim)``.

        Needed by the ground-truth metrics (MIG, SAP, DCI, ...), traversals and latent PCA.
        """

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes float32 ``(B, latent_dim)`` -> decoder outputs float32 ``(B, ...)`` (the observation shape).

        The raw parameters of p(x | z): logits for a Bernoulli likelihood, means for a Gaussian;
        :meth:`reconstruction_nll` scores them, :meth:`generate` turns them into observations.
        """

    def reconstruction_nll(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample NLL float32 ``(B,)`` in nats, summed over data dimensions, of observations
        ``x`` ``(B, ...)`` given decoder outputs ``decoded`` of the same shape (:meth:`decode`'s)."""

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Codes float32 ``(B, latent_dim)`` -> observations float32 ``(B, ...)`` in data space.

        The mean of p(x | z) for a VAE (pixel probabilities in [0, 1] for a Bernoulli
        likelihood), the generator's images for a GAN: what traversals and interpolations show.
        """

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` model samples float32 ``(num, ...)`` in data space (sample metrics such as ``sample_mmd``)."""

    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic outputs ``(B, ...)`` for a batch (the snapshots of the prediction grid)."""

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample task predictions ``(B, ...)`` by name, kept with the snapshots."""

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: list[torch.optim.Optimizer],
                      amp: Any = None) -> dict[str, torch.Tensor]:
        """The family's own optimisation step on a batch; returns scalar terms, ``loss`` among them.

        ``amp`` (:class:`~trainables.precision.Amp`) does its backward passes and optimizer steps,
        so fp16 loss scaling reaches every optimizer; the loop runs the step under autocast."""

    def configure_optimizers(self, training: Any) -> list[torch.optim.Optimizer]:
        """The family's own optimizers from the typed training spec (:class:`~trainables.training.TrainingSpec`)."""

    def validation_metrics(self, predictions: dict[str, torch.Tensor]) -> dict[str, float]:
        """Epoch-level validation metrics (reported as ``val_<name>``) from the per-sample
        ``predictions`` of a whole validation pass (AUC, sequence accuracy...)."""

    @classmethod
    def config_metrics(cls, config: Any) -> tuple[str, ...]:
        """Per-epoch metric names that depend on the config (``val_y_auc`` of a multitask VAE)."""

    @classmethod
    def check_setup(cls, config: Any, training: Any, data: Any) -> None:
        """Refuses, before Ray starts, a config that cannot train on the data with the training spec.

        Args:
            config: The family's validated config.
            training: The trial's :class:`~trainables.training.TrainingSpec`.
            data: The dataset's :class:`~datasets.registry.DataDescription`.

        Raises:
            ValueError: One line, ``family.<field>: <expected> (got <value>)``.
        """


METHOD_ABILITIES: frozenset[str] = frozenset(
    name for name in vars(ModelAbilities) if not name.startswith("_") and callable(getattr(ModelAbilities, name))
)
ATTRIBUTE_ABILITIES: frozenset[str] = frozenset(inspect.get_annotations(ModelAbilities))
ABILITIES: frozenset[str] = METHOD_ABILITIES | ATTRIBUTE_ABILITIES


class Shard(Protocol):
    """A worker's view of one dataset split (a Ray Data ``DataIterator`` or a test double)."""

    def iter_torch_batches(self, *, batch_size: int, dtypes: torch.dtype,
                           device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """One pass: batches of ``batch_size`` rows, each column a tensor ``(B, ...)`` on ``device``."""

    def iter_batches(self, *, batch_size: int, batch_format: str) -> Iterator[dict[str, np.ndarray]]:
        """One pass: batches of ``batch_size`` rows, each column an array ``(B, ...)`` (``batch_format="numpy"``)."""


class RestoredCheckpoint(Protocol):
    """A checkpoint a session hands back to resume from (``ray.train.Checkpoint`` or a test double)."""

    def as_directory(self) -> contextlib.AbstractContextManager[str]:
        """A context giving a local directory with the checkpoint's files."""


class Session(Protocol):
    """Where a worker reports to: Ray Train (inside a TorchTrainer), Ray Tune (in the trial) or a test double.

    Attributes:
        world_rank: This worker's rank, 0 to ``world_size - 1``; rank 0 validates and checkpoints.
        world_size: Workers training the trial (data-parallel).
        node_id: The Ray node this worker runs on, or None outside Ray.
        gpu_ids: The GPUs Ray assigned this worker (``[]`` on the CPU).
    """

    world_rank: int
    world_size: int
    node_id: str | None
    gpu_ids: list[str]

    def report(self, metrics: dict[str, float | str], checkpoint_dir: str | None) -> None:
        """Reports one epoch's metrics, with the checkpoint directory (rank 0) or None."""

    def checkpoint(self) -> RestoredCheckpoint | None:
        """The checkpoint to resume from, or None for a fresh trial."""

    def shard(self, name: str) -> Shard:
        """This worker's shard of the dataset split ``name`` (``train`` or ``val``)."""

    def device(self) -> torch.device:
        """Where this worker trains."""

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device, DDP-wrapped when several workers train."""


def supports(model: Any, ability: str) -> bool:
    """Whether ``model`` (a module, a DDP wrapper or a model class) has ``ability``.

    A method ability is supported when the name is callable on ``model``. An attribute ability
    is supported by an instance that holds the attribute, and by a class when it or a base class
    declares it (an annotation, a class attribute or a property).

    Args:
        model: A model instance, a ``DistributedDataParallel`` around one, or a model class.
        ability: One of :data:`ABILITIES`.

    Raises:
        KeyError: If ``ability`` is not one of :data:`ABILITIES`.
    """
    if ability not in ABILITIES:
        raise KeyError(f"unknown model ability {ability!r}; expected one of {sorted(ABILITIES)}")
    target = unwrap(model)
    if ability in METHOD_ABILITIES:
        return callable(getattr(target, ability, None))
    if isinstance(target, type):
        return any(ability in vars(k) or ability in inspect.get_annotations(k) for k in target.__mro__)
    return hasattr(target, ability)


def unwrap(model: Any) -> Any:
    """The module inside a ``DistributedDataParallel`` wrapper, or ``model`` itself."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def representation_fn(model: torch.nn.Module, device: torch.device | str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """Observations float32 ``(B, C, H, W)`` -> posterior means float32 ``(B, latent_dim)`` of ``model``.

    Args:
        model: A module with the ``encode`` ability, already on ``device``.
        device: Where the observations are sent before encoding; the codes come back as numpy.

    Raises:
        TypeError: If the model cannot encode.
    """
    if not supports(model, "encode"):
        raise TypeError(f"{type(unwrap(model)).__name__} has no encoder (the ability `encode`)")

    def encode(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
            return unwrap(model).encode(x)[0].float().cpu().numpy()

    return encode
