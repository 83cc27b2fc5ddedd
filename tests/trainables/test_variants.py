"""The beta-VAE variants' regularizers, against known answers; and the shared TC estimator."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch.distributions import Normal

from trainables.families.annealed_vae import annealed_capacity
from trainables.families.dip_vae import dip_covariance, dip_regularizer
from trainables.families.factor_vae import permute_dims
from trainables.losses import gaussian_kl, gaussian_log_density, reparameterize, total_correlation
from trainables.registry import get_family
from trainables.training import TrainingSpec

INPUT_SHAPE = (1, 16, 16)
TINY = {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3}


def build(name: str, seed: int = 0, **config) -> torch.nn.Module:
    torch.manual_seed(seed)
    family = get_family(name)
    return family.model_cls(family.config_cls(**{**TINY, **config}), INPUT_SHAPE)


def images(batch: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"image": (torch.rand(batch, *INPUT_SHAPE, generator=generator) < 0.3).float()}


def gaussian_codes(num: int, dims: int, posterior_var: float, rho: float, seed: int):
    """Posterior means whose aggregate with ``posterior_var`` is N(0, 1) per dimension; latents 0 and 1
    correlated by ``rho * (1 - posterior_var)``. Returns ``(z, mu, logvar)``, each ``(num, dims)``."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(num, dims, generator=generator)
    mu = noise * math.sqrt(1 - posterior_var)
    mu[:, 1] = math.sqrt(1 - posterior_var) * (rho * noise[:, 0] + math.sqrt(1 - rho**2) * noise[:, 1])
    logvar = torch.full((num, dims), math.log(posterior_var))
    z = mu + torch.randn(num, dims, generator=generator) * math.sqrt(posterior_var)
    return z, mu, logvar


# trainables/losses.py: gaussian_log_density, total_correlation


def test_gaussian_log_density_equals_torch_normal():
    generator = torch.Generator().manual_seed(0)
    x, mean, logvar = torch.randn(3, 5, 4, generator=generator).unbind(0)
    expected = Normal(mean, torch.exp(0.5 * logvar)).log_prob(x)
    torch.testing.assert_close(gaussian_log_density(x, mean, logvar), expected)


def test_total_correlation_equals_the_batch_mixture_written_out():
    generator = torch.Generator().manual_seed(1)
    z, mu, logvar = torch.randn(3, 6, 3, generator=generator).unbind(0)
    posteriors = Normal(mu, torch.exp(0.5 * logvar))  # batch of (6, 3)
    expected = []
    for code in z:
        per_dim = posteriors.log_prob(code).exp()  # (6, 3): q(z_jl | x_i)
        joint = per_dim.prod(dim=1).mean().log()
        marginals = per_dim.mean(dim=0).log().sum()
        expected.append(joint - marginals)
    torch.testing.assert_close(total_correlation(z, mu, logvar), torch.stack(expected))


def test_total_correlation_of_independent_codes_is_near_zero():
    z, mu, logvar = gaussian_codes(1000, 2, posterior_var=0.1, rho=0.0, seed=0)
    tc = float(total_correlation(z, mu, logvar).mean())
    assert abs(tc) < 0.05, tc


def test_total_correlation_of_correlated_codes_is_the_gaussian_value():
    rho = 0.95
    z, mu, logvar = gaussian_codes(1000, 2, posterior_var=0.1, rho=rho, seed=0)
    tc = float(total_correlation(z, mu, logvar).mean())
    r = rho * (1 - 0.1)  # correlation of the aggregate posterior
    assert tc > 0.3
    assert tc == pytest.approx(-0.5 * math.log(1 - r**2), abs=0.1)  # 0.657 nats


def test_total_correlation_of_a_single_code_is_zero():
    z, mu, logvar = gaussian_codes(1, 4, posterior_var=0.3, rho=0.9, seed=0)
    assert float(total_correlation(z, mu, logvar).abs()) < 1e-5


# beta_tcvae


def test_beta_tcvae_tc_term_is_the_estimator_at_the_decoded_codes():
    model = build("beta_tcvae", beta=6.0).eval()
    batch = images()
    with torch.no_grad():
        torch.manual_seed(5)
        out = model(batch)
        mu, logvar = model.encode(batch["image"])
        torch.manual_seed(5)  # the same draw of z as forward's
        z = reparameterize(mu, logvar)
    torch.testing.assert_close(out.extra["tc"], total_correlation(z, mu, logvar).mean())


# annealed_vae


@pytest.mark.parametrize("step, expected", [(0, 0.0), (500, 12.5), (1000, 25.0), (5000, 25.0)])
def test_annealed_capacity_known_values(step, expected):
    assert float(annealed_capacity(step, c_max=25.0, iteration_threshold=1000)) == pytest.approx(expected)


def test_annealed_vae_counts_training_steps_and_keeps_them_in_its_state_dict():
    model = build("annealed_vae", c_max=10.0, iteration_threshold=4)
    batch = images()
    model.train()
    capacities = [float(model(batch).extra["capacity"]) for _ in range(3)]
    assert capacities == [0.0, 2.5, 5.0]  # C of the steps taken before each forward
    model.eval()
    assert float(model(batch).extra["capacity"]) == 7.5 and int(model.step) == 3  # evaluation counts nothing
    restored = build("annealed_vae", seed=1, c_max=10.0, iteration_threshold=4)
    restored.load_state_dict(model.state_dict())
    assert int(restored.step) == 3


def test_annealed_vae_refuses_a_beta():
    with pytest.raises(ValidationError, match="beta"):
        get_family("annealed_vae").config_cls(beta=4.0)


# dip_vae


def whitened(num: int, dims: int, seed: int) -> torch.Tensor:
    """``(num, dims)`` points whose covariance (divided by ``num``) is exactly the identity."""
    x = torch.randn(num, dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(dim=0)
    cholesky = torch.linalg.cholesky(x.T @ x / num)
    return torch.linalg.solve_triangular(cholesky, x.T, upper=False).T


def test_dip_penalty_is_zero_at_identity_covariance_and_positive_otherwise():
    mu = whitened(64, 3, seed=0)
    logvar = torch.zeros_like(mu)
    assert float(dip_regularizer(dip_covariance(mu, logvar, "i"), 10.0, 100.0)) < 1e-9
    assert float(dip_regularizer(dip_covariance(2 * mu, logvar, "i"), 10.0, 100.0)) > 1.0
    mixed = mu @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=mu.dtype)
    assert float(dip_regularizer(dip_covariance(mixed, logvar, "i"), 10.0, 0.0)) > 1.0  # off-diagonal alone


def test_dip_ii_counts_the_posterior_variances():
    mu = whitened(64, 3, seed=1) * math.sqrt(0.5)  # Cov[mu] = I / 2
    logvar = torch.full_like(mu, math.log(0.5))  # E[Cov_q(z|x)] = I / 2
    assert float(dip_regularizer(dip_covariance(mu, logvar, "ii"), 5.0, 5.0)) < 1e-9
    # Type i sees only Cov[mu]: diagonal 1/2, off by 1/2 in each of 3 dimensions.
    assert float(dip_regularizer(dip_covariance(mu, logvar, "i"), 5.0, 8.0)) == pytest.approx(8.0 * 3 * 0.25)


def test_dip_covariance_equals_torch_cov():
    mu = torch.randn(32, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(dip_covariance(mu, torch.zeros_like(mu), "i"), torch.cov(mu.T, correction=0))


def test_dip_regularizer_known_value():
    covariance = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    # off-diagonal: 2 * 0.5^2 = 0.5; diagonal: (2 - 1)^2 = 1.
    assert float(dip_regularizer(covariance, lambda_od=3.0, lambda_d=7.0)) == pytest.approx(3.0 * 0.5 + 7.0 * 1.0)


@pytest.mark.parametrize("dip_type, factor", [("i", 10.0), ("ii", 1.0)])
def test_dip_lambda_d_defaults_to_disentanglement_libs_factor(dip_type, factor):
    assert build("dip_vae", dip_type=dip_type, lambda_od=2.0).lambda_d == pytest.approx(2.0 * factor)
    assert build("dip_vae", dip_type=dip_type, lambda_od=2.0, lambda_d=3.0).lambda_d == 3.0


# factor_vae


def test_permute_dims_permutes_each_column():
    torch.manual_seed(0)
    z = torch.arange(40.0).view(10, 4)
    permuted = permute_dims(z)
    for column in range(4):
        assert sorted(permuted[:, column].tolist()) == z[:, column].tolist()
    assert not torch.equal(permuted, z)


def correlated_codes(num: int, generator: torch.Generator) -> torch.Tensor:
    """``(num, 3)`` codes: the first two nearly equal, the third independent."""
    base = torch.randn(num, 2, generator=generator)
    return torch.stack([base[:, 0], base[:, 0] + 0.1 * torch.randn(num, generator=generator), base[:, 1]], dim=1)


def test_factor_vae_discriminator_learns_to_tell_codes_from_permuted_codes():
    model = build("factor_vae", discriminator_layers=2, discriminator_hidden=64)
    optimizer = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        optimizer.zero_grad()
        model.discriminator_loss(correlated_codes(128, generator)).backward()
        optimizer.step()
    z = correlated_codes(1000, generator)
    with torch.no_grad():
        logits = model.discriminator(z)  # (1000, 2)
        joint = logits.argmax(dim=1) == 0
        permuted = model.discriminator(permute_dims(z)).argmax(dim=1) == 1
    tc = (logits[:, 0] - logits[:, 1]).mean()
    accuracy = float(torch.cat([joint, permuted]).float().mean())
    assert accuracy > 0.8, accuracy
    assert float(tc) > 0.5  # a TC the VAE is then pushed to lower (true value for these codes: ~2.3 nats)


def test_factor_vae_training_step_updates_both_networks_with_their_own_optimizers():
    model = build("factor_vae", discriminator_layers=2, discriminator_hidden=16).train()
    optimizers = model.configure_optimizers(TrainingSpec(lr=1e-3, optimizer="adam"))
    vae_ids = {id(p) for group in optimizers[0].param_groups for p in group["params"]}
    discriminator_ids = {id(p) for p in model.discriminator.parameters()}
    assert not vae_ids & discriminator_ids and vae_ids | discriminator_ids == {id(p) for p in model.parameters()}
    assert optimizers[1].param_groups[0]["betas"] == (0.5, 0.9)
    encoder = model.encoder.head[-1].weight.detach().clone()
    discriminator = model.discriminator[0].weight.detach().clone()
    terms = model.training_step(images(), optimizers)
    assert {"loss", "recon_loss", "kl", "tc", "discriminator_loss"} <= set(terms)
    assert all(math.isfinite(float(v)) and v.shape == () for v in terms.values())
    assert float(terms["discriminator_loss"]) == pytest.approx(math.log(2), abs=0.1)  # untrained: at chance
    assert not torch.equal(model.encoder.head[-1].weight, encoder)
    assert not torch.equal(model.discriminator[0].weight, discriminator)


def test_factor_vae_refuses_another_optimizer():
    with pytest.raises(ValueError, match="training.optimizer"):
        build("factor_vae").configure_optimizers(TrainingSpec(lr=1e-3, optimizer="sgd"))


# Every variant: loss = recon + its penalty, from the reported terms.

PENALTIES = {
    "beta_tcvae": ({"beta": 6.0}, lambda t, c: t["kl"] + (c.beta - 1) * t["tc"]),
    "annealed_vae": ({"gamma": 7.0, "c_max": 3.0}, lambda t, c: c.gamma * abs(t["kl"] - t["capacity"])),
    "factor_vae": ({"gamma": 20.0}, lambda t, c: t["kl"] + c.gamma * t["tc"]),
    "dip_vae": ({"lambda_od": 3.0}, lambda t, c: t["kl"] + t["dip"]),
}


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_variant_loss_is_recon_plus_its_penalty(name):
    config, penalty = PENALTIES[name]
    model = build(name, **config).eval()
    with torch.no_grad():
        model.encoder.head[-1].weight.mul_(30.0)  # spread the codes: untrained ones sit at 0, where penalties vanish
        terms = {k: float(v) for k, v in model(images()).terms().items()}
    expected = terms["recon_loss"] + penalty(terms, model.config)
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)
    assert terms["loss"] != pytest.approx(terms["recon_loss"] + terms["kl"], rel=1e-5)  # not the plain ELBO


def test_variant_kl_is_the_gaussian_kl():
    model = build("dip_vae").eval()
    batch = images()
    mu, logvar = model.encode(batch["image"])
    torch.testing.assert_close(model(batch).kl, gaussian_kl(mu, logvar).mean())
