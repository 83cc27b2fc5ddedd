"""Conditional MLP VAE: the MLP VAE with a learned class embedding fed to encoder and decoder.

q(z | x, y) and p(x | z, y) both see ``embedding(y)`` concatenated to their input; the prior
stays N(0, I), so ``sample(num, labels=...)`` draws from p(x | y) class by class. The batch's
``label`` column holds the class (float, cast here); ``-1`` marks a row without a label.

One extra embedding row stands for "no label": it conditions ``encode(x)``, ``decode(z)`` and
``sample(num)`` when no labels are given, and is trained by replacing each training row's label
with it with probability ``label_dropout`` (classifier-free guidance's condition dropout), so
the label-free calls are a trained unconditional VAE rather than an untrained embedding.

References:
    Sohn, Lee & Yan 2015, "Learning Structured Output Representation using Deep Conditional
    Generative Models", NeurIPS (eq. 4, the conditional ELBO); Ho & Salimans 2022,
    "Classifier-Free Diffusion Guidance", arXiv:2207.12598 (condition dropout, sec. 3.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from trainables.families.mlp_vae import MLPVAE, MLPVAEConfig
from trainables.registry import register

__all__ = ["MLPCVAEConfig", "MLPCVAE", "NO_LABEL"]

NO_LABEL = -1  # a label value meaning "unlabelled": the row uses the no-label embedding


class MLPCVAEConfig(MLPVAEConfig):
    """Hyperparameters of :class:`MLPCVAE`: the MLP VAE's plus the label embedding."""

    num_classes: int = Field(2, ge=1, le=100_000)  # labels in [0, num_classes); 2: two moons
    embedding_dim: int = Field(4, gt=0, le=1024)  # a few dims separate a handful of classes
    # Probability that a training row's label is replaced by "no label"; 0 leaves encode(x),
    # decode(z) and sample(num) without labels untrained. Validation always uses the labels.
    label_dropout: float = Field(0.1, ge=0.0, lt=1.0)


@register("mlp_cvae", MLPCVAEConfig, loss_terms=("recon_loss", "kl"))
class MLPCVAE(MLPVAE):
    """MLP VAE conditioned on a class label through a learned embedding.

    Args:
        config: The family's hyperparameters.
        input_shape: Shape of one observation, ``(D,)`` (or ``(C, H, W)``, flattened).
    """

    num_classes: int  # the ability of trainables.protocol: labels lie in [0, num_classes)

    @classmethod
    def check_setup(cls, config: MLPCVAEConfig, training, data) -> None:
        """Refuses data without a ``label`` column, or with more classes than ``num_classes``."""
        if "label" not in data.columns:
            raise ValueError(f"family.num_classes: mlp_cvae conditions on a 'label' column, but the dataset has "
                             f"{sorted(data.columns)}")
        classes = data.classes.get("label")
        if classes is None:
            raise ValueError("family.num_classes: the dataset's 'label' column does not hold class indices 0, 1, ...")
        if classes != config.num_classes:
            raise ValueError(f"family.num_classes: the dataset's labels take {classes} values (0 .. {classes - 1}), "
                             f"but got num_classes={config.num_classes}")

    def __init__(self, config: MLPCVAEConfig, input_shape: Sequence[int]):
        super().__init__(config, input_shape, condition_dim=config.embedding_dim)
        self.num_classes = config.num_classes
        self.embedding = nn.Embedding(config.num_classes + 1, config.embedding_dim)  # last row: no label

    def condition(self, labels: torch.Tensor | None, num: int) -> torch.Tensor:
        """The embeddings ``(num, embedding_dim)`` of ``labels``.

        Args:
            labels: Classes ``(num,)``, any numeric dtype, in ``[0, num_classes)`` or
                :data:`NO_LABEL`; None: no label for every row.
            num: Rows (used when ``labels`` is None).

        Raises:
            ValueError: If a label is outside ``[0, num_classes)`` and not :data:`NO_LABEL`.
        """
        device = self.embedding.weight.device
        if labels is None:
            return self.embedding(torch.full((num,), self.num_classes, dtype=torch.long, device=device))
        index = self._checked(labels).to(device)  # (num,)
        return self.embedding(torch.where(index == NO_LABEL, self.num_classes, index))

    def _checked(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` as int64, after checking that each is a class or :data:`NO_LABEL`."""
        index = labels.long()
        if len(index) and (int(index.min()) < NO_LABEL or int(index.max()) >= self.num_classes):
            raise ValueError(
                f"family.num_classes: labels must lie in [0, {self.num_classes}) (or {NO_LABEL} for none), "
                f"but got values from {int(index.min())} to {int(index.max())}"
            )
        return index

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mu, logvar)``, each ``(B, latent_dim)``, of ``x`` ``(B, *input_shape)`` given
        ``labels`` ``(B,)`` (None: without a label)."""
        return super().encode(torch.cat([x.flatten(start_dim=1), self.condition(labels, len(x))], dim=1))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder outputs ``(B, *input_shape)`` for codes ``z`` ``(B, latent_dim)`` given ``labels``
        ``(B,)`` (None: without a label)."""
        return super().decode(torch.cat([z, self.condition(labels, len(z))], dim=1))

    def encode_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode(batch["image"], batch["label"])``."""
        return self.encode(batch["image"], _labels(batch))

    def decode_batch(self, z: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``decode(z, batch["label"])``."""
        return self.decode(z, _labels(batch))

    def forward(self, batch: dict[str, torch.Tensor]):
        """The VAE's forward pass on the labelled batch; in training, each label is dropped to
        :data:`NO_LABEL` with probability ``label_dropout`` (the same rows for encoder and decoder)."""
        if self.training and self.config.label_dropout > 0:
            labels = _labels(batch)
            self._checked(labels)  # before dropping: a bad label must not hide behind NO_LABEL
            dropped = torch.rand(labels.shape, device=labels.device) < self.config.label_dropout  # (B,)
            batch = {**batch, "label": torch.where(dropped, torch.full_like(labels, NO_LABEL), labels)}
        return super().forward(batch)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """``num`` samples ``(num, *input_shape)``: likelihood means of prior draws decoded given ``labels``.

        Args:
            num: Samples.
            generator: Seeds the prior draws (CPU generator).
            labels: Class of each sample ``(num,)`` (e.g. ``torch.full((num,), c)`` for class
                ``c``); None: the unconditional model (the no-label embedding).
        """
        z = torch.randn(num, self.latent_dim, generator=generator).to(self.embedding.weight.device)
        return self.likelihood.mean(self.decode(z, labels))


def _labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's ``label`` column ``(B,)``.

    Raises:
        ValueError: If the batch has no ``label`` column.
    """
    if "label" not in batch:
        raise ValueError(f"mlp_cvae needs a 'label' column, but the batch has {sorted(batch)}; "
                         "use a labelled dataset (e.g. toy)")
    return batch["label"]
