"""The MLP VAE and CVAE families beyond the registry-wide checks: likelihood, conditioning, labels."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.families.mlp_cvae import MLPCVAE, NO_LABEL, MLPCVAEConfig
from trainables.families.mlp_vae import MLPVAE, MLPVAEConfig
from trainables.nets import MLP


def two_blobs(num: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Half the points around (-3, -3) with label 0, half around (3, 3) with label 1 (std 0.3)."""
    generator = torch.Generator().manual_seed(seed)
    label = (torch.arange(num) % 2).float()
    return {"image": (2 * label[:, None] - 1) * 3.0 + 0.3 * torch.randn(num, 2, generator=generator), "label": label}


def test_mlp_layers():
    net = MLP(3, [5, 7], 2, "relu")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 5), (5, 7), (7, 2)]
    assert sum(isinstance(m, nn.ReLU) for m in net) == 2  # none after the output layer
    assert net(torch.zeros(4, 3)).shape == (4, 2)
    assert len(MLP(3, [], 2)) == 1
    with pytest.raises(ValueError, match="dimensions"):
        MLP(3, [0], 2)
    with pytest.raises(ValueError, match="activation"):
        MLP(3, [4], 2, "tanh")


def test_recon_loss_is_the_fixed_sigma_gaussian_nll():
    torch.manual_seed(0)
    sigma = 0.2
    model = MLPVAE(MLPVAEConfig(hidden_widths=(8,), latent_dim=2, sigma=sigma), (2,)).eval()
    batch = two_blobs(6)
    out = model(batch)
    x = batch["image"]
    per_point = (0.5 * math.log(2 * math.pi) + math.log(sigma) + (x - out.recon) ** 2 / (2 * sigma**2)).sum(dim=1)
    torch.testing.assert_close(out.recon_loss, per_point.mean())
    torch.testing.assert_close(out.loss, out.recon_loss + model.beta * out.kl)
    with torch.no_grad():
        mean_code = model.decode(model.encode(x)[0])
    torch.testing.assert_close(model.reconstruct(batch), mean_code)  # Gaussian mean = decoder output at mu


def test_images_are_flattened_and_restored():
    model = MLPVAE(MLPVAEConfig(hidden_widths=(8,), latent_dim=3, likelihood="bernoulli"), (1, 4, 4)).eval()
    images = (torch.rand(5, 1, 4, 4) < 0.5).float()
    out = model({"image": images})
    assert out.recon.shape == (5, 1, 4, 4) and model.sample(2).shape == (2, 1, 4, 4)
    assert ((model.sample(2) >= 0) & (model.sample(2) <= 1)).all()  # Bernoulli means


def train(model: nn.Module, batch: dict[str, torch.Tensor], steps: int, lr: float = 1e-2) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
    return model.eval()


def test_cvae_samples_follow_the_label():
    torch.manual_seed(0)
    config = MLPCVAEConfig(hidden_widths=(32, 32), latent_dim=2, sigma=0.3, num_classes=2, embedding_dim=4)
    model = MLPCVAE(config, (2,))
    generator = torch.Generator().manual_seed(1)
    untrained = [model.sample(400, generator, labels=torch.full((400,), c)).mean(0) for c in (0, 1)]
    assert float((untrained[1] - untrained[0]).norm()) < 1.0  # a random embedding barely moves the output
    train(model, two_blobs(256), steps=300)
    means = [model.sample(400, generator, labels=torch.full((400,), c)).mean(0) for c in (0, 1)]
    torch.testing.assert_close(means[0], torch.tensor([-3.0, -3.0]), atol=0.6, rtol=0)
    torch.testing.assert_close(means[1], torch.tensor([3.0, 3.0]), atol=0.6, rtol=0)


def test_cvae_labels_outside_the_classes_are_refused():
    model = MLPCVAE(MLPCVAEConfig(hidden_widths=(8,), num_classes=2), (2,))
    batch = two_blobs(4)
    with pytest.raises(ValueError, match="num_classes"):
        model({**batch, "label": torch.tensor([0.0, 1.0, 2.0, 0.0])})
    with pytest.raises(ValueError, match="num_classes"):
        model.sample(3, labels=torch.tensor([0, -2, 1]))
    with pytest.raises(ValueError, match="'label' column"):
        model({"image": batch["image"]})


def test_cvae_without_labels_uses_the_no_label_embedding():
    model = MLPCVAE(MLPCVAEConfig(hidden_widths=(8,), num_classes=3), (2,)).eval()
    x = two_blobs(5)["image"]
    unlabelled = torch.full((5,), float(NO_LABEL))
    for a, b in zip(model.encode(x), model.encode(x, unlabelled)):
        torch.testing.assert_close(a, b)
    z = torch.randn(5, model.latent_dim)
    torch.testing.assert_close(model.decode(z), model.decode(z, unlabelled))
    assert not torch.allclose(model.decode(z), model.decode(z, torch.zeros(5)))


@pytest.mark.parametrize("dropout, trained", [(0.0, False), (0.5, True)])
def test_label_dropout_trains_the_no_label_embedding(dropout, trained):
    torch.manual_seed(0)
    model = MLPCVAE(MLPCVAEConfig(hidden_widths=(8,), num_classes=2, label_dropout=dropout), (2,)).train()
    model(two_blobs(64)).loss.backward()
    grad = model.embedding.weight.grad  # (num_classes + 1, embedding_dim); the last row is "no label"
    assert bool(grad[2].abs().sum() > 0) == trained
    assert (grad[:2].abs().sum(dim=1) > 0).all()
    model.eval()  # validation never drops labels: two eval passes with the same z draws agree
    batch = two_blobs(8)
    torch.manual_seed(1)
    first = model(batch).loss
    torch.manual_seed(1)
    torch.testing.assert_close(model(batch).loss, first)
