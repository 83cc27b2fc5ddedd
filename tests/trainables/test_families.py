"""Every registered model family, through one parametrized module; and the shared losses."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from pydantic import ValidationError
from torch.distributions import Bernoulli, Normal, kl_divergence

from tests.trainables.test_seq2seq import arithmetic_batch
from trainables.losses import bernoulli_nll, gaussian_kl, reparameterize
from trainables.protocol import ABILITIES, supports
from trainables.registry import Family, family_names, get_family
from trainables.training import TrainingSpec


def labelled_sprites(setup: dict, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Binary images ``(B, *input_shape)`` with one square each, and task targets read off the square:
    ``y`` 1 when it sits in the top half, ``m0`` 100 + 10 * its column (GeV-like, for multitask_vae)."""
    images = sprite_batch({"input_shape": setup["input_shape"]}, batch, seed)["image"]  # (B, C, H, W)
    height = images.shape[2]
    row = images[:, 0].amax(dim=2).argmax(dim=1)  # the square's first row (argmax: first maximum)
    col = images[:, 0].amax(dim=1).argmax(dim=1)
    return {"image": images, "y": (row < height // 2 - 1).float(), "m0": 100.0 + 10.0 * col.float()}


def toy_points(setup: dict, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """2-D points ``(B, 2)`` in two tight blobs at (-3, -3) (label 0) and (3, 3) (label 1), labels float ``(B,)``."""
    generator = torch.Generator().manual_seed(seed)
    label = (torch.arange(batch) % 2).float()
    points = (2 * label[:, None] - 1) * 3.0 + 0.3 * torch.randn(batch, 2, generator=generator)
    return {"image": points, "label": label}


# Per family: a small input shape, a tiny config, and values its config must refuse.
# Optional keys: "batch": (setup, batch_size, seed) -> batch dict when the family needs more than
# binary images (labels, targets, continuous data); "likelihood": "gaussian" when the untrained
# recon_loss is not ~log 2 per pixel; "vae": False for families without an encoder (GANs).
# A new family fails test_every_family_has_a_setup until it gets a row here.
SETUPS: dict[str, dict] = {
    "seq2seq": {  # recurrent encoder-decoder on arithmetic queries: token batches, no latent code
        "input_shape": (5,),
        "config": {"cell": "gru", "hidden_dim": 32, "embedding_dim": 8},
        "invalid": {"hidden_dim": 0, "embedding_dim": 0, "encoder_layers": 5},
        "batch": arithmetic_batch,
        "vae": False,
    },
    "conv_vae": {
        "input_shape": (1, 16, 16),  # 16 divisible by 2 ** len(filters)
        "config": {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3},
        "invalid": {"beta": -1.0, "latent_dim": 0, "hidden_dim": 0, "filters": []},
    },
    "beta_vae": {  # conv_vae under the literature's name (Locatello et al.'s method table)
        "input_shape": (1, 16, 16),
        "config": {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3, "beta": 4.0},
        "invalid": {"beta": -1.0, "latent_dim": 0, "hidden_dim": 0, "filters": []},
    },
    "dcgan": {  # a GAN: own training step, losses d_loss/g_loss, no encoder
        "input_shape": (3, 16, 16),  # two stride-2 layers leave 4x4 for the last conv
        "config": {"filters": [8, 16], "latent_dim": 4},
        "invalid": {"latent_dim": 0, "filters": []},
        "vae": False,
    },
    "multitask_vae": {  # conv VAE + task heads: the loss adds weighted task losses
        "input_shape": (1, 16, 16),
        "config": {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3, "head_widths": [8],
                   "tasks": {"y": {"kind": "classify", "classes": 2},
                             "m0": {"kind": "regress", "center": 150.0, "scale": 50.0}}},
        "invalid": {"beta": -1.0, "latent_dim": 0, "hidden_dim": 0, "filters": []},
        "batch": labelled_sprites,
        "plain_beta_vae": False,
    },
    # The beta-VAE variants (trainables/families/{beta_tcvae,annealed_vae,factor_vae,dip_vae}.py):
    # their losses are recon + their own penalty (tests/trainables/test_variants.py checks it).
    "beta_tcvae": {
        "input_shape": (1, 16, 16),
        "config": {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3, "beta": 4.0},
        "invalid": {"beta": -1.0, "latent_dim": 0, "hidden_dim": 0, "filters": []},
        "plain_beta_vae": False,
    },
    "annealed_vae": {
        "input_shape": (1, 16, 16),
        "config": {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3, "gamma": 10.0, "c_max": 2.0,
                   "iteration_threshold": 20},
        "invalid": {"beta": 2.0, "latent_dim": 0, "hidden_dim": 0, "filters": []},
        "plain_beta_vae": False,
    },
    "factor_vae": {
        "input_shape": (1, 16, 16),
        "config": {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3, "gamma": 10.0,
                   "discriminator_layers": 2, "discriminator_hidden": 16},
        "invalid": {"beta": 2.0, "latent_dim": 0, "hidden_dim": 0, "filters": []},
        "plain_beta_vae": False,
    },
    "dip_vae": {
        "input_shape": (1, 16, 16),
        "config": {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3, "lambda_od": 1.0},
        "invalid": {"beta": 2.0, "latent_dim": 0, "hidden_dim": 0, "filters": []},
        "plain_beta_vae": False,
    },
    # MLP VAE and CVAE on 2-D points (datasets/toy.py). sigma 1: the Gaussian NLL is then at least
    # log(2 pi) > 0 per point, so the loss-falls ratio compares positive losses (the untrained ~11
    # nats must reach ~2-4 by fitting the blobs; a decoder stuck at the mean stays near 11).
    "mlp_vae": {
        "input_shape": (2,),
        "config": {"hidden_widths": [16, 16], "latent_dim": 2, "sigma": 1.0},
        "invalid": {"beta": -1.0, "latent_dim": 0},
        "batch": toy_points,
        "likelihood": "gaussian",
    },
    "mlp_cvae": {
        "input_shape": (2,),
        "config": {"hidden_widths": [16, 16], "latent_dim": 2, "sigma": 1.0, "num_classes": 2, "embedding_dim": 3},
        "invalid": {"beta": -1.0, "latent_dim": 0},
        "batch": toy_points,
        "likelihood": "gaussian",
    },
}

BATCH = 4


def test_every_family_has_a_setup():
    missing = sorted(set(family_names()) - set(SETUPS))
    assert not missing, f"add a row to SETUPS in {__file__} for the families {missing}"


@pytest.fixture(params=family_names())
def family(request) -> Family:
    return get_family(request.param)


@pytest.fixture
def setup(family) -> dict:
    if family.name not in SETUPS:
        pytest.fail(f"family {family.name!r} has no row in SETUPS ({__file__}): add its input shape and tiny config")
    return SETUPS[family.name]


def build(family: Family, setup: dict, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = family.config_cls(**{**setup["config"], **overrides})
    return family.model_cls(config, setup["input_shape"])


def binary_batch(setup: dict, batch: int = BATCH, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random binary images ``(B, *input_shape)``, each pixel on with probability 0.3 (or the family's own batch)."""
    if "batch" in setup:
        return setup["batch"](setup, batch, seed)
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, *setup["input_shape"])
    return {"image": (torch.rand(shape, generator=generator) < 0.3).float()}  # (B, C, H, W)


def sprite_batch(setup: dict, batch: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Binary images ``(B, *input_shape)``: one square of a quarter of the image width each, placed at random
    (or the family's own batch)."""
    if "batch" in setup:
        return setup["batch"](setup, batch, seed)
    generator = torch.Generator().manual_seed(seed)
    channels, height, width = setup["input_shape"]
    side = max(1, height // 4)
    images = torch.zeros(batch, channels, height, width)
    corners = torch.randint(0, height - side + 1, (batch, 2), generator=generator)
    for image, (row, col) in zip(images, corners.tolist()):
        image[:, row : row + side, col : col + side] = 1.0
    return {"image": images}


def test_config_round_trips_through_yaml(family, setup):
    config = family.config_cls(**setup["config"])
    text = yaml.safe_dump(config.model_dump(mode="json"))
    assert family.config_cls(**yaml.safe_load(text)) == config


def test_default_config_round_trips_through_yaml(family):
    config = family.config_cls()
    assert family.config_cls(**yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json")))) == config


def test_config_is_frozen(family, setup):
    config = family.config_cls(**setup["config"])
    with pytest.raises(ValidationError):
        config.latent_dim = 5


@pytest.mark.parametrize("field", ["beta", "latent_dim", "hidden_dim", "filters"])
def test_bad_config_value_is_refused_naming_the_field(family, setup, field):
    if field not in setup["invalid"]:
        pytest.skip(f"{family.name} has no invalid value listed for {field}")
    with pytest.raises(ValidationError, match=field):
        family.config_cls(**{**setup["config"], field: setup["invalid"][field]})


def test_unknown_config_key_is_refused(family, setup):
    with pytest.raises(ValidationError, match="not_a_field"):
        family.config_cls(**setup["config"], not_a_field=1)


def vae_only(setup: dict) -> None:
    if not setup.get("vae", True):
        pytest.skip("not a VAE")


def test_epoch_metrics_name_the_loss_terms(family, setup):
    assert {"train_loss", "val_loss"} <= set(family.epoch_metrics)
    if setup.get("vae", True):
        assert {"val_elbo", "val_recon_loss", "val_kl"} <= set(family.epoch_metrics)


def test_output_shapes(family, setup):
    vae_only(setup)
    model = build(family, setup)
    batch = binary_batch(setup)
    out = model(batch)
    latent_dim = setup["config"]["latent_dim"]
    assert out.mu.shape == (BATCH, latent_dim)
    assert out.logvar.shape == (BATCH, latent_dim)
    assert out.recon.shape == batch["image"].shape
    for name, value in out.terms().items():
        assert value.shape == (), name
    mu, logvar = model.encode(batch["image"])
    assert mu.shape == logvar.shape == (BATCH, latent_dim)
    assert model.decode(mu).shape == batch["image"].shape


def test_loss_terms_are_finite_and_consistent(family, setup):
    model = build(family, setup).eval()
    out = model(binary_batch(setup))
    terms = {k: float(v.detach()) for k, v in out.terms().items()}
    assert all(math.isfinite(v) for v in terms.values()), terms
    assert {t.removeprefix("val_") for t in family.epoch_metrics if t.startswith("val_") and t != "val_elbo"} <= set(terms)
    if not setup.get("vae", True) or setup.get("likelihood") == "gaussian":
        return
    assert terms["recon_loss"] > 0 and terms["kl"] >= 0
    # Untrained decoder logits are near 0: each pixel costs about log 2 nats.
    pixels = math.prod(setup["input_shape"])
    assert terms["recon_loss"] == pytest.approx(pixels * math.log(2), rel=0.2)
    if setup.get("plain_beta_vae", True):
        assert terms["loss"] == pytest.approx(terms["recon_loss"] + model.beta * terms["kl"], rel=1e-5)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_output_is_a_model_output_with_predictions(family, setup, mode):
    # The loop reads out.loss, out.terms() and out.predictions of every family (trainables.protocol.ModelOutput).
    model = build(family, setup).train(mode == "train")
    out = model(binary_batch(setup))
    assert out.terms()["loss"] is out.loss
    assert isinstance(out.predictions, dict)
    for name, value in out.predictions.items():
        assert isinstance(value, torch.Tensor) and len(value) == BATCH, name


def test_reconstructions_are_deterministic_and_val_terms_reproducible(family, setup):
    vae_only(setup)
    model = build(family, setup).eval()
    batch = binary_batch(setup)
    assert torch.equal(model.reconstruct(batch), model.reconstruct(batch))
    torch.manual_seed(0)
    first = model(batch).loss
    torch.manual_seed(0)
    assert torch.equal(model(batch).loss, first)  # val terms: one sampled z, reproducible by seed


def test_own_training_step_updates_parameters_with_finite_terms(family, setup):
    model = build(family, setup).train()
    if not supports(model, "training_step"):
        pytest.skip("trained by the loop's default step")
    optimizers = model.configure_optimizers(TrainingSpec(lr=1e-3, optimizer="adam"))
    before = [p.detach().clone() for p in model.parameters()]
    terms = model.training_step(binary_batch(setup), optimizers)
    assert "loss" in terms and all(math.isfinite(float(v)) for v in terms.values()), terms
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed), f"{changed.count(False)} parameter tensors did not move"


def test_own_training_step_is_counted_by_amp(family, setup, fp16_on_cpu):
    """A family's own step goes through Amp: counted as taken, or as skipped (nothing applied to the
    overflowing network) when the fp16 scaler finds its gradients overflowed."""
    from trainables.precision import Amp

    model = build(family, setup).train()
    if not supports(model, "training_step"):
        pytest.skip("trained by the loop's default step")
    optimizers = model.configure_optimizers(TrainingSpec(lr=1e-3, optimizer="adam"))
    amp = Amp("fp32")
    model.training_step(binary_batch(setup), optimizers, amp)
    assert amp.update() is True and (amp.taken, amp.skipped) == (1, 0)
    first = next(model.parameters())
    first.register_hook(lambda grad: grad * math.inf)
    before = first.detach().clone()
    fp16 = Amp("fp16")
    model.training_step(binary_batch(setup), optimizers, fp16)
    assert fp16.update() is False and (fp16.taken, fp16.skipped) == (0, 1)
    assert torch.equal(first.detach(), before)


# The families built on conv stacks: the loop trains them in channels_last on the CPU.
CONV_FAMILIES = {"conv_vae", "beta_vae", "beta_tcvae", "annealed_vae", "factor_vae", "dip_vae", "multitask_vae", "dcgan"}


def test_conv_families_compute_the_same_terms_in_their_memory_format(family, setup):
    model = build(family, setup).eval()  # eval: no state advanced by a pass (annealed_vae's step)
    assert supports(model, "memory_format") == (family.name in CONV_FAMILIES)
    if family.name not in CONV_FAMILIES:
        pytest.skip("no conv stack")
    batch = binary_batch(setup)
    torch.manual_seed(1)
    expected = model(batch).terms()
    model = model.to(memory_format=model.memory_format)
    assert model.memory_format == torch.channels_last
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    torch.manual_seed(1)
    got = model(batch).terms()
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4, msg=name)


def test_backward_gives_finite_grads_on_every_parameter(family, setup):
    model = build(family, setup).train()
    if supports(model, "training_step"):
        pytest.skip("has its own training step (tested above)")
    model(binary_batch(setup)).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert any(parameter.grad.abs().sum() > 0 for parameter in model.parameters())


def mean_eval_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], passes: int = 10) -> float:
    """The eval-mode loss averaged over ``passes`` draws of the sampled codes."""
    model.eval()
    with torch.no_grad():
        return sum(float(model(batch).loss) for _ in range(passes)) / passes


def test_loss_falls_on_a_fixed_batch(family, setup):
    if supports(build(family, setup), "training_step"):
        pytest.skip("adversarial losses need not fall")
    model = build(family, setup)
    batch = sprite_batch(setup)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    before = mean_eval_loss(model, batch)
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
    after = mean_eval_loss(model, batch)
    # Pixels are on with probability 1/16: the marginals alone bring ~256 log 2 to ~60 nats.
    assert after < setup.get("loss_fall", 0.5) * before, (before, after)


def test_image_size_not_fitting_the_filters_is_refused(family, setup):
    if family.name != "conv_vae":
        pytest.skip("conv-specific")
    config = family.config_cls(**setup["config"])
    with pytest.raises(ValueError, match="filters"):
        family.model_cls(config, (1, 18, 18))  # 18 not divisible by 2 ** 2


# The abilities of trainables/protocol.py, asked through supports()


def test_an_unknown_ability_is_a_key_error(family, setup):
    for target in (family.model_cls, build(family, setup)):
        with pytest.raises(KeyError, match="not_an_ability"):
            supports(target, "not_an_ability")


def test_the_class_and_its_instances_agree_on_every_ability(family, setup):
    model = build(family, setup)
    disagree = [a for a in sorted(ABILITIES) if supports(family.model_cls, a) != supports(model, a)]
    assert not disagree, f"{family.name}: declare these abilities on the class too: {disagree}"


VAE_ABILITIES = {"encode", "decode", "reconstruction_nll", "generate", "sample", "reconstruct", "latent_dim"}
NON_VAE_ABILITIES = {"dcgan": {"generate", "sample", "latent_dim"}, "seq2seq": {"reconstruct"}}


def test_vaes_have_the_abilities_the_analysis_asks_for(family, setup):
    have = {a for a in VAE_ABILITIES if supports(family.model_cls, a)}
    assert have == (VAE_ABILITIES if setup.get("vae", True) else NON_VAE_ABILITIES[family.name])
    assert supports(family.model_cls, "num_classes") == (family.name == "mlp_cvae")


def test_encode_decode_round_trips_shapes(family, setup):
    model = build(family, setup).eval()
    if not (supports(model, "encode") and supports(model, "decode")):
        pytest.skip("no encoder and decoder")
    x = binary_batch(setup)["image"]
    with torch.no_grad():
        mu, logvar = model.encode(x)
        decoded = model.decode(mu)
        means = model.generate(mu)
        nll = model.reconstruction_nll(decoded, x)
    assert model.latent_dim == setup["config"]["latent_dim"]
    assert mu.shape == logvar.shape == (BATCH, model.latent_dim) and mu.dtype == torch.float32
    assert decoded.shape == means.shape == x.shape and decoded.dtype == means.dtype == torch.float32
    # generate() is the mean of p(x | z): the decoder's means (Gaussian) or the logits' sigmoid (Bernoulli).
    expected = decoded if setup.get("likelihood") == "gaussian" else torch.sigmoid(decoded)
    torch.testing.assert_close(means, expected)
    assert nll.shape == (BATCH,) and torch.isfinite(nll).all()
    if setup.get("likelihood") != "gaussian":  # an untrained decoder: about log 2 nats per pixel
        pixels = math.prod(setup["input_shape"])
        assert float(nll.mean()) == pytest.approx(pixels * math.log(2), rel=0.2)


def test_generate_maps_prior_codes_to_observations(family, setup):
    model = build(family, setup).eval()
    if not supports(model, "generate"):
        pytest.skip("generates nothing from codes")
    assert supports(model, "latent_dim"), "generate() takes codes of latent_dim"
    z = torch.randn(BATCH, model.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = model.generate(z)
    assert images.shape == (BATCH, *setup["input_shape"]) and torch.isfinite(images).all()
    if setup.get("likelihood") != "gaussian":  # Bernoulli means and GAN images lie in [0, 1]
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_conditional_families_give_their_class_count(family, setup):
    model = build(family, setup).eval()
    if not supports(model, "num_classes"):
        pytest.skip("not conditional")
    assert isinstance(model.num_classes, int) and model.num_classes >= 2
    assert model.num_classes == setup["config"]["num_classes"]
    labels = torch.arange(BATCH) % model.num_classes
    with torch.no_grad():
        samples = model.sample(BATCH, torch.Generator().manual_seed(0), labels=labels)
    assert samples.shape == (BATCH, *setup["input_shape"])


def test_reported_metrics_add_the_config_metrics_of_families_that_have_them(family, setup):
    config = family.config_cls(**setup["config"])
    assert family.reported_metrics() == family.epoch_metrics
    extra = tuple(family.model_cls.config_metrics(config)) if supports(family.model_cls, "config_metrics") else ()
    assert family.reported_metrics(config) == family.epoch_metrics + extra
    if family.name == "multitask_vae":  # SETUPS: a classify task y and a regress task m0
        assert {"val_y_auc", "val_m0_mae"} <= set(extra)


# trainables/losses.py


def test_bernoulli_nll_equals_torch_distribution():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 2, 3, 4, generator=generator) * 3
    target = (torch.rand(5, 2, 3, 4, generator=generator) < 0.5).float()
    expected = -Bernoulli(logits=logits).log_prob(target).sum(dim=(1, 2, 3))
    nll = bernoulli_nll(logits, target)
    assert nll.shape == (5,)
    torch.testing.assert_close(nll, expected)
    assert (nll >= 0).all()


def test_bernoulli_nll_of_fractional_targets_is_the_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 7, generator=generator)
    target = torch.rand(3, 7, generator=generator)
    p = torch.sigmoid(logits)
    expected = -(target * p.log() + (1 - target) * (1 - p).log()).sum(dim=1)
    torch.testing.assert_close(bernoulli_nll(logits, target), expected)


def test_bernoulli_nll_known_value():
    # Logit 0 is p = 1/2: every pixel costs log 2 whatever its value.
    nll = bernoulli_nll(torch.zeros(2, 1, 4, 4), torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 4, 4))
    torch.testing.assert_close(nll, torch.full((2,), 16 * math.log(2)))


def test_gaussian_kl_equals_torch_distribution():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 4, generator=generator) * 2
    logvar = torch.randn(6, 4, generator=generator)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(dim=1)
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == (6,)
    torch.testing.assert_close(kl, expected)
    assert (kl >= 0).all()


def test_gaussian_kl_is_zero_at_the_prior():
    assert torch.equal(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))


def test_gaussian_kl_known_value():
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension.
    torch.testing.assert_close(gaussian_kl(torch.ones(1, 4), torch.zeros(1, 4)), torch.tensor([2.0]))


def test_reparameterize_moments_and_gradient():
    torch.manual_seed(0)
    mu = torch.full((20000, 2), 2.0, requires_grad=True)
    logvar = torch.full((20000, 2), math.log(4.0), requires_grad=True)
    z = reparameterize(mu, logvar)
    assert z.shape == (20000, 2)
    assert float(z.detach().mean()) == pytest.approx(2.0, abs=0.05)
    assert float(z.detach().std()) == pytest.approx(2.0, abs=0.05)
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))
    assert logvar.grad is not None and torch.isfinite(logvar.grad).all()
