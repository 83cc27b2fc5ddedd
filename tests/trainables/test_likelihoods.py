"""trainables/likelihoods.py and the conv VAE's likelihood settings."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch.distributions import Normal

from trainables.families.conv_vae import ConvVAE, ConvVAEConfig
from trainables.likelihoods import BernoulliLikelihood, GaussianLikelihood, build_likelihood, gaussian_nll
from trainables.losses import bernoulli_nll

SHAPE = (3, 4, 5)  # (C, H, W)


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(6, *SHAPE, generator=generator)
    x = mean + torch.randn(6, *SHAPE, generator=generator) * 0.7
    return mean, x


@pytest.mark.parametrize("sigma_shape", [(), (3, 1, 1), SHAPE], ids=["fixed", "channel", "pixel"])
def test_gaussian_nll_equals_torch_normal(sigma_shape):
    mean, x = data()
    log_sigma = torch.linspace(-1.0, 1.0, math.prod(sigma_shape)).reshape(sigma_shape)
    expected = -Normal(mean, log_sigma.exp().expand_as(mean)).log_prob(x).sum(dim=(1, 2, 3))
    nll = gaussian_nll(mean, x, log_sigma)
    assert nll.shape == (6,)
    torch.testing.assert_close(nll, expected)


def test_gaussian_nll_known_value_includes_the_normalising_constant():
    # At x == mean with sigma 1, each dimension costs 0.5 * log(2 pi).
    nll = gaussian_nll(torch.zeros(2, *SHAPE), torch.zeros(2, *SHAPE), torch.tensor(0.0))
    torch.testing.assert_close(nll, torch.full((2,), 60 * 0.5 * math.log(2 * math.pi)))


@pytest.mark.parametrize(("learn_sigma", "shape"), [("none", ()), ("channel", (3, 1, 1)), ("pixel", SHAPE)])
def test_gaussian_likelihood_sigma_shapes_and_start(learn_sigma, shape):
    likelihood = GaussianLikelihood(SHAPE, sigma=0.3, learn_sigma=learn_sigma)
    assert likelihood.log_sigma.shape == shape
    torch.testing.assert_close(likelihood.log_sigma, torch.full(shape, math.log(0.3)))
    assert isinstance(likelihood.log_sigma, torch.nn.Parameter) == (learn_sigma != "none")
    mean, x = data(1)
    expected = -Normal(mean, 0.3).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(likelihood.nll(mean, x), expected)
    assert torch.equal(likelihood.mean(mean), mean)


@pytest.mark.parametrize("learn_sigma", ["channel", "pixel"])
def test_learned_sigma_gets_gradients(learn_sigma):
    likelihood = GaussianLikelihood(SHAPE, sigma=1.0, learn_sigma=learn_sigma)
    mean, x = data(2)
    likelihood.nll(mean, x).sum().backward()
    grad = likelihood.log_sigma.grad
    assert grad is not None and grad.shape == likelihood.log_sigma.shape
    assert (grad.abs() > 0).all()
    # d/d log_sigma of sum(log_sigma + r^2 / 2 sigma^2) at sigma 1 is the count minus sum(r^2).
    residual2 = (x - mean).pow(2)
    dims = (0, 2, 3) if learn_sigma == "channel" else (0,)
    count = residual2.shape[0] * (SHAPE[1] * SHAPE[2] if learn_sigma == "channel" else 1)
    torch.testing.assert_close(grad.reshape(-1), (count - residual2.sum(dim=dims)).reshape(-1))


def test_gaussian_likelihood_refuses_non_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        GaussianLikelihood(SHAPE, sigma=0.0)


def test_build_likelihood_by_name():
    assert isinstance(build_likelihood("bernoulli", SHAPE), BernoulliLikelihood)
    gaussian = build_likelihood("gaussian", SHAPE, 0.5, "channel")
    assert isinstance(gaussian, GaussianLikelihood) and gaussian.log_sigma.shape == (3, 1, 1)


# The conv VAE's likelihood settings.

TINY = {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3}


def test_conv_vae_default_is_bernoulli_unchanged():
    torch.manual_seed(0)
    model = ConvVAE(ConvVAEConfig(**TINY), (1, 16, 16)).eval()
    assert isinstance(model.likelihood, BernoulliLikelihood)
    assert not any(name.startswith("likelihood") for name in model.state_dict())  # old checkpoints still load
    x = (torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    out = model({"image": x})
    torch.testing.assert_close(out.recon_loss, bernoulli_nll(out.recon, x).mean())
    with torch.no_grad():
        expected = torch.sigmoid(model.decode(model.encode(x)[0]))  # the mean code's pixel probabilities
    assert torch.equal(model.reconstruct({"image": x}), expected)


def test_conv_vae_gaussian_learned_sigma_trains_with_the_model():
    torch.manual_seed(0)
    config = ConvVAEConfig(**TINY, likelihood="gaussian", sigma=0.2, learn_sigma="channel")
    model = ConvVAE(config, (3, 16, 16)).eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = model({"image": x})
    expected = -Normal(out.recon, 0.2).log_prob(x).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(out.recon_loss, expected)
    assert float(out.loss.detach()) == pytest.approx(float((out.recon_loss + out.kl).detach()), rel=1e-5)
    assert "likelihood.log_sigma" in dict(model.named_parameters())
    model.train()
    model({"image": x}).loss.backward()
    assert model.likelihood.log_sigma.grad.abs().sum() > 0


def test_the_seed_jets_architecture_is_reachable():
    # Four stride-2 convs 3 -> 32 -> 64 -> 128 -> 256 on 128x128 images.
    config = ConvVAEConfig(filters=[32, 64, 128, 256], likelihood="gaussian", learn_sigma="channel")
    model = ConvVAE(config, (3, 128, 128))
    convs = [m for m in model.encoder.convs if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (3, 32, (2, 2)), (32, 64, (2, 2)), (64, 128, (2, 2)), (128, 256, (2, 2))]
    assert model.decode(torch.zeros(1, 10)).shape == (1, 3, 128, 128)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"likelihood": "gaussian", "sigma": 0.0}, "sigma"),
    ({"likelihood": "gaussian", "learn_sigma": "row"}, "learn_sigma"),
    ({"likelihood": "poisson"}, "likelihood"),
    ({"learn_sigma": "channel"}, "learn_sigma"),  # a Bernoulli has no sigma
    ({"sigma": 0.5}, "sigma"),
])
def test_conv_vae_refuses_bad_likelihood_settings(overrides, field):
    with pytest.raises(ValidationError, match=field):
        ConvVAEConfig(**TINY, **overrides)
