"""The per-worker training loop, run against an in-memory session (no Ray)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.base import ArrayGroundTruthData
from trainables.checkpoint import CHECKPOINT_FILE, TRIAL_FILE, load_checkpoint
from trainables.loop import run_worker
from trainables.registry import get_family
from trainables.training import TrainingSpec
from trainables.trial import TrialConfig, trial_seed

FAMILY_CONFIG = {"filters": [8, 8], "hidden_dim": 16, "latent_dim": 3}
INPUT_SHAPE = (1, 16, 16)
SIZES = [4, 4, 3]  # pos_x, pos_y, side of the square in each image


@pytest.fixture(autouse=True)
def restore_threads():
    """run_worker sets the global thread count (to 1 here); put it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def square_images(factors: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 1, 16, 16)``: a square of side ``2 + f2`` at ``(3 * f0, 3 * f1)`` per factor row."""
    images = np.zeros((len(factors), *INPUT_SHAPE), dtype=np.uint8)
    for image, (x, y, s) in zip(images, factors):
        image[0, 3 * y : 3 * y + 2 + s, 3 * x : 3 * x + 2 + s] = 1
    return images


def grid_factors() -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) for n in SIZES], indexing="ij"), -1).reshape(-1, len(SIZES))


def ground_truth() -> ArrayGroundTruthData:
    factors = grid_factors()
    return ArrayGroundTruthData(square_images(factors), factors, SIZES, ["pos_x", "pos_y", "size"])


class Shard:
    """Stands in for a Ray Data shard: batches of float images in file order."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def iter_torch_batches(self, batch_size, dtypes, device):
        for start in range(0, len(self.images), batch_size):
            image = torch.as_tensor(self.images[start : start + batch_size], dtype=dtypes, device=device)
            yield {"image": image}  # (B, 1, 16, 16)

    def iter_batches(self, batch_size, batch_format):
        for start in range(0, len(self.images), batch_size):
            yield {"image": self.images[start : start + batch_size]}


class RestoredCheckpoint:
    """Stands in for a Ray checkpoint: ``as_directory()`` yields its directory."""

    def __init__(self, directory: Path):
        self.directory = directory

    @contextlib.contextmanager
    def as_directory(self):
        yield str(self.directory)


class FakeSession:
    """A single in-memory worker: records reports and keeps a copy of each checkpoint directory."""

    world_rank = 0
    node_id = None
    world_size = 1

    def __init__(
        self,
        keep: Path,
        train: np.ndarray,
        val: np.ndarray,
        restore: Path | None = None,
        *,
        world_rank: int = 0,
        delete_reported: bool = True,
        device: str = "cpu",
    ):
        self.keep = keep
        self.world_rank = world_rank
        self.gpu_ids: list[str] = []
        self.delete_reported = delete_reported
        self._device = torch.device(device)
        self.shards_asked: list[str] = []
        self.datasets = {"train": Shard(train), "val": Shard(val)}
        self.restore = restore
        self.reports: list[dict] = []
        self.checkpoints: list[Path | None] = []
        self.prepared_state: dict[str, torch.Tensor] | None = None

    def report(self, metrics, checkpoint_dir):
        self.reports.append(dict(metrics))
        if checkpoint_dir is None:
            self.checkpoints.append(None)
            return
        copy = self.keep / f"epoch{metrics['epoch']}"
        shutil.copytree(checkpoint_dir, copy)  # as Ray does: copy to storage, leave the original
        if self.delete_reported:
            shutil.rmtree(checkpoint_dir)
        self.checkpoints.append(copy)

    def checkpoint(self):
        return RestoredCheckpoint(self.restore) if self.restore is not None else None

    def shard(self, name):
        self.shards_asked.append(name)
        return self.datasets[name]

    def device(self):
        return self._device

    def prepare(self, model):
        self.prepared_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return model.to(self._device)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """Train ``(64, 1, 16, 16)`` and val ``(16, 1, 16, 16)`` binary square images (float32 0/1)."""
    rng = np.random.default_rng(0)
    factors = grid_factors()
    images = square_images(factors[rng.choice(len(factors), 80)]).astype(np.float32)
    return images[:64], images[64:]


def trial(epochs: int = 3, **changes) -> TrialConfig:
    config = TrialConfig(
        family="conv_vae",
        family_config=get_family("conv_vae").config_cls(**FAMILY_CONFIG),
        training=TrainingSpec(epochs=epochs, batch_size=16, lr=1e-2, optimizer="adam"),
        input_shape=INPUT_SHAPE,
        seed=123,
        threads=1,
    )
    return replace(config, **changes)


def run(
    tmp_path: Path, data, config: TrialConfig, restore: Path | None = None, name: str = "run", **session_options
) -> FakeSession:
    keep = tmp_path / name
    keep.mkdir()
    session = FakeSession(keep, *data, restore=restore, **session_options)
    run_worker(config, session)
    return session


def test_one_report_per_epoch_with_the_named_metrics(tmp_path, data):
    session = run(tmp_path, data, trial(epochs=3))
    assert [r["epoch"] for r in session.reports] == [1, 2, 3]
    for report in session.reports:
        assert {"epoch", "train_loss", "train_recon_loss", "train_kl", "val_loss", "val_elbo", "val_recon_loss",
                "val_kl"} <= set(report)
        assert "mig" not in report
        for key, value in report.items():
            assert math.isfinite(value), (key, value)
        assert report["val_elbo"] == pytest.approx(-(report["val_recon_loss"] + report["val_kl"]))
        assert report["val_recon_loss"] > 0 and report["val_kl"] >= 0


def test_reports_carry_the_family_epoch_metrics(tmp_path, data):
    session = run(tmp_path, data, trial(epochs=1))
    assert set(get_family("conv_vae").epoch_metrics) <= set(session.reports[0])


def test_val_terms_are_the_eval_mode_losses_of_the_reported_model(tmp_path, data):
    # val_* are means over the val rows of the eval-mode terms (one sampled z per row: the ELBO
    # estimate) of the model saved at that epoch. In fp32, as the model is scored here.
    session = run(tmp_path, data, with_training(trial(epochs=1), precision="fp32"))
    family = get_family("conv_vae")
    model = family.model_cls(family.config_cls(**FAMILY_CONFIG), INPUT_SHAPE)
    model.load_state_dict(load_checkpoint(session.checkpoints[0])["model"])
    model.eval()
    batch = {"image": torch.from_numpy(data[1])}
    torch.manual_seed(0)
    with torch.no_grad():
        outs = [model(batch) for _ in range(200)]
    report = session.reports[0]
    assert report["val_kl"] == pytest.approx(float(outs[0].kl), rel=1e-5)  # no sampling in the KL
    recon = np.array([float(o.recon_loss) for o in outs])  # (200,) draws of the val recon_loss
    assert abs(report["val_recon_loss"] - recon.mean()) < 4 * recon.std() + 1e-3, (report["val_recon_loss"], recon.mean())


def test_train_loss_falls_over_epochs(tmp_path, data):
    session = run(tmp_path, data, trial(epochs=4))
    losses = [r["train_loss"] for r in session.reports]
    assert losses[-1] < 0.7 * losses[0], losses


class StubEvaluation:
    """The evaluation handed to the loop: records its calls, returns a fixed score."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, device, held_out):
        self.calls.append((model.training, held_out(5).shape))
        return {"mig": 0.5}


def test_last_epoch_reports_the_handed_evaluation(tmp_path, data):
    evaluate = StubEvaluation()
    session = run(tmp_path, data, trial(epochs=2, evaluate=evaluate))
    assert "mig" not in session.reports[0]
    assert session.reports[-1]["mig"] == 0.5
    assert evaluate.calls == [(False, (5, *INPUT_SHAPE))]  # once, in eval mode, with held-out images


class LabelledShard:
    """A validation shard with an image and a label column, counting its passes."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels, self.passes = images, labels, 0

    def iter_batches(self, batch_size, batch_format):
        self.passes += 1
        for start in range(0, len(self.images), batch_size):
            yield {"image": self.images[start : start + batch_size], "y": self.labels[start : start + batch_size]}


def test_held_out_columns_are_the_same_rows_read_in_one_pass():
    from trainables.loop import _held_out

    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 1, 2, 2)
    shard = LabelledShard(images, np.arange(10) % 3)
    held_out = _held_out(shard, batch_size=4)
    got = held_out(7)
    assert got.dtype == np.float32 and got.shape == (7, 1, 2, 2)
    np.testing.assert_array_equal(got, images[:7])
    np.testing.assert_array_equal(held_out(7, "y"), [0, 1, 2, 0, 1, 2, 0])
    assert shard.passes == 1  # the label came from the same cached read
    with pytest.raises(KeyError):
        held_out(7, "label")


def test_an_evaluation_that_raises_fails_the_trial(tmp_path, data):
    def broken(model, device, held_out):
        raise ValueError("evaluation.metrics: mig needs ground-truth factors")

    with pytest.raises(ValueError, match="ground-truth factors"):
        run(tmp_path, data, trial(epochs=1, evaluate=broken))


def test_provenance_is_stamped_by_the_trial(tmp_path, data):
    session = run(tmp_path, data, trial(epochs=2))
    first = json.loads((session.checkpoints[0] / TRIAL_FILE).read_text())["provenance"]
    last = json.loads((session.checkpoints[-1] / TRIAL_FILE).read_text())["provenance"]
    assert last["torch_version"] == torch.__version__ and last["numpy_version"] == np.__version__
    assert last["device"] == "cpu" and last["threads"] == 1
    assert last["started_at"] == first["started_at"] and last["ended_at"] >= first["ended_at"]
    assert isinstance(last["git_dirty"], (bool, type(None)))
    resumed = run(tmp_path, data, trial(epochs=3), restore=session.checkpoints[-1], name="resumed")
    again = json.loads((resumed.checkpoints[-1] / TRIAL_FILE).read_text())["provenance"]
    assert again["started_at"] == first["started_at"]  # a resumed trial keeps its start


def test_checkpoint_holds_model_optimizer_epoch_and_trial(tmp_path, data):
    config = trial(epochs=2)
    session = run(tmp_path, data, config)
    assert all(c is not None for c in session.checkpoints)
    for epoch, directory in enumerate(session.checkpoints, start=1):
        assert (directory / CHECKPOINT_FILE).is_file()
        state = load_checkpoint(directory)
        assert state["epoch"] == epoch
        assert set(state) == {"model", "optimizers", "epoch", "step"}
        assert state["step"] == epoch * 4  # 64 rows in batches of 16
        assert state["optimizers"][0]["state"]  # Adam moments after a step
        described = json.loads((directory / TRIAL_FILE).read_text())
        assert described["family"] == "conv_vae"
        assert described["seed"] == config.seed
        # The whole validated config as JSON values (the given keys and the defaults of the rest).
        assert described["family_config"] == config.family_config.model_dump(mode="json")
        assert FAMILY_CONFIG.items() <= described["family_config"].items()
        assert "ground_truth" not in described
    family = get_family("conv_vae")
    model = family.model_cls(family.config_cls(**FAMILY_CONFIG), INPUT_SHAPE)
    model.load_state_dict(load_checkpoint(session.checkpoints[-1])["model"])  # strict: every key matches


def test_checkpoint_with_ground_truth_still_writes_plain_trial_json(tmp_path, data):
    config = trial(epochs=1, evaluate=StubEvaluation(), description={"evaluation": {"metrics": ["mig"]}})
    session = run(tmp_path, data, config)
    described = json.loads((session.checkpoints[0] / TRIAL_FILE).read_text())
    assert described["evaluation"] == {"metrics": ["mig"]} and "evaluate" not in described


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    torch.save({"model": {}, "epoch": 1, "evil": ground_truth()}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(tmp_path)


def test_load_checkpoint_of_empty_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path)


def test_resume_runs_only_the_remaining_epochs_from_the_saved_weights(tmp_path, data):
    first = run(tmp_path, data, trial(epochs=2), name="first")
    saved_dir = first.checkpoints[-1]
    saved = load_checkpoint(saved_dir)
    resumed = run(tmp_path, data, trial(epochs=4), restore=saved_dir, name="resumed")
    assert [r["epoch"] for r in resumed.reports] == [3, 4]
    assert resumed.prepared_state.keys() == saved["model"].keys()
    for key, value in saved["model"].items():
        assert torch.equal(resumed.prepared_state[key], value), key
    assert load_checkpoint(resumed.checkpoints[-1])["epoch"] == 4
    # Training went on from the saved model, not from a fresh one.
    fresh = run(tmp_path, data, trial(epochs=1), name="fresh")
    assert resumed.reports[0]["train_loss"] < fresh.reports[0]["train_loss"]


def test_resume_after_the_last_epoch_reports_nothing(tmp_path, data):
    first = run(tmp_path, data, trial(epochs=1), name="first")
    resumed = run(tmp_path, data, trial(epochs=1), restore=first.checkpoints[-1], name="resumed")
    assert resumed.reports == []


def test_same_seed_gives_the_same_reports(tmp_path, data):
    a = run(tmp_path, data, trial(epochs=1), name="a")
    b = run(tmp_path, data, trial(epochs=1), name="b")
    c = run(tmp_path, data, trial(epochs=1, seed=124), name="c")
    assert a.reports[0]["train_loss"] == b.reports[0]["train_loss"]
    assert a.reports[0]["val_elbo"] == b.reports[0]["val_elbo"]
    assert a.reports[0]["train_loss"] != c.reports[0]["train_loss"]


def test_only_rank_zero_validates_and_checkpoints(tmp_path, data):
    session = run(tmp_path, data, trial(epochs=2, evaluate=StubEvaluation()), world_rank=1)
    assert [r["epoch"] for r in session.reports] == [1, 2]
    assert session.checkpoints == [None, None]
    assert "val" not in session.shards_asked
    for report in session.reports:
        assert "train_loss" in report
        assert not any(key.startswith("val_") for key in report) and "mig" not in report


def test_checkpoint_directories_do_not_outlive_their_report(tmp_path, data, monkeypatch):
    # Ray's report copies a checkpoint directory to storage and leaves the original in place
    # ("It's up to the user to delete the original checkpoint files"), so the loop must remove
    # its temporary directories itself, or every epoch of every trial leaves one in /tmp.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    run(tmp_path, data, trial(epochs=2), delete_reported=False)
    assert sorted(p.name for p in scratch.iterdir()) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_gpu(tmp_path, data):
    # The optimizer state is restored before prepare() moves the model: it must still follow it.
    first = run(tmp_path, data, trial(epochs=1), name="first", device="cuda")
    resumed = run(tmp_path, data, trial(epochs=2), restore=first.checkpoints[-1], name="resumed", device="cuda")
    assert [r["epoch"] for r in resumed.reports] == [2]


def test_nan_in_the_data_raises(tmp_path, data):
    train, val = data
    train = train.copy()
    train[5, 0, 3, 3] = np.nan
    with pytest.raises(FloatingPointError, match="epoch 1"):
        run(tmp_path, (train, val), trial(epochs=2))


def test_diverging_learning_rate_raises(tmp_path, data):
    config = trial(epochs=2)
    config = replace(config, training=config.training.model_copy(update={"lr": 1e30}))
    with pytest.raises(FloatingPointError):
        run(tmp_path, data, config)


def test_empty_shard_is_an_error(tmp_path, data):
    with pytest.raises(RuntimeError, match="no rows"):
        run(tmp_path, (data[0][:0], data[1]), trial(epochs=1))


def test_trial_seed_is_stable_and_differs_across_repeats():
    seeds = [trial_seed(0, r) for r in range(20)]
    assert len(set(seeds)) == 20
    assert seeds == [trial_seed(0, r) for r in range(20)]
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)
    # Known values: np.random.SeedSequence is stable across numpy versions.
    assert trial_seed(0, 0) == int(np.random.SeedSequence([0, 0]).generate_state(1)[0] & 0x7FFFFFFF)
    # Pinned: a change here silently reseeds every study resumed or rerun.
    assert [trial_seed(7, 0), trial_seed(7, 1)] == [2083679832, 369571992]
    # The same repeat of another study seed differs.
    assert trial_seed(1, 0) != trial_seed(0, 0)


def test_snapshots_keep_fixed_val_reconstructions_at_the_chosen_epochs(tmp_path, data):
    from trainables.checkpoint import load_snapshots

    session = run(tmp_path, data, trial(epochs=3, snapshot_epochs=[1], snapshot_samples=5))
    first = load_snapshots(session.checkpoints[0])
    assert sorted(first) == ["epoch_0001", "inputs"]
    last = load_snapshots(session.checkpoints[-1])
    assert sorted(last) == ["epoch_0001", "epoch_0003", "inputs"]  # epoch 2 not chosen; the last always
    np.testing.assert_array_equal(last["inputs"], data[1][:5])  # the first val rows, fixed
    assert last["epoch_0003"].shape == (5, *INPUT_SHAPE) and last["epoch_0003"].dtype == np.float16
    assert 0.0 <= last["epoch_0003"].min() and last["epoch_0003"].max() <= 1.0  # Bernoulli means
    # Reconstructions improve as training goes on.
    error = {k: np.abs(last[k].astype(np.float32) - last["inputs"]).mean() for k in ("epoch_0001", "epoch_0003")}
    assert error["epoch_0003"] < error["epoch_0001"], error


def test_snapshots_survive_a_resume_and_can_be_switched_off(tmp_path, data):
    from trainables.checkpoint import load_snapshots

    first = run(tmp_path, data, trial(epochs=1), name="first")
    resumed = run(tmp_path, data, trial(epochs=2), restore=first.checkpoints[-1], name="resumed")
    assert sorted(load_snapshots(resumed.checkpoints[-1])) == ["epoch_0001", "epoch_0002", "inputs"]
    off = run(tmp_path, data, trial(epochs=1, snapshot_samples=0), name="off")
    assert load_snapshots(off.checkpoints[-1]) == {}


def test_fp32_trains_bit_for_bit_as_a_plain_loop(tmp_path, data):
    """precision fp32 adds nothing: the same parameters as a hand-written loop, to the bit."""
    from trainables.loop import _run_epoch
    from trainables.trial import build_model

    config = trial(epochs=1)
    torch.manual_seed(0)
    plain = build_model(config)
    torch.manual_seed(0)
    ours = build_model(config)
    torch.manual_seed(1)
    optimizer = torch.optim.Adam(plain.parameters(), lr=config.training.lr)
    for batch in Shard(data[0]).iter_torch_batches(16, torch.float32, "cpu"):
        optimizer.zero_grad(set_to_none=True)
        plain(batch).loss.backward()
        optimizer.step()
    torch.manual_seed(1)
    _run_epoch(ours, Shard(data[0]), 16, torch.device("cpu"), [torch.optim.Adam(ours.parameters(), lr=config.training.lr)])
    for (name, a), (_, b) in zip(plain.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name


def with_training(config: TrialConfig, **changes) -> TrialConfig:
    return replace(config, training=config.training.model_copy(update=changes))


def adam_steps(checkpoint: Path) -> int:
    """The steps the checkpoint's (first) Adam applied: its per-parameter step count."""
    return int(load_checkpoint(checkpoint)["optimizers"][0]["state"][0]["step"])


def overflowing(monkeypatch, when):
    """Makes the trial's model overflow its gradients (times inf) on the backward passes ``when(n)``
    picks, n counting from 0: the fp16 loss scaler then skips those steps."""
    from trainables import loop

    build = loop.build_model

    def build_model(config):
        model = build(config)
        calls = iter(range(1_000_000))
        weight = next(model.parameters())
        weight.register_hook(lambda grad: grad * math.inf if when(next(calls)) else grad)
        return model

    monkeypatch.setattr(loop, "build_model", build_model)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, data, precision, fp16_on_cpu):
    # Batches of 4: 16 steps an epoch, more than the fp16 scaler skips while its scale settles.
    config = with_training(trial(epochs=4), precision=precision, batch_size=4)
    session = run(tmp_path, data, config)
    losses = [r["train_loss"] for r in session.reports]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    state = load_checkpoint(session.checkpoints[-1])
    assert ("scaler" in state) == (precision == "fp16")
    for epoch, report in enumerate(session.reports, start=1):
        assert report["step"] + report["skipped_steps"] == 16 * epoch  # every batch attempted
    assert session.reports[-1]["step"] == adam_steps(session.checkpoints[-1])
    if precision == "bf16":
        assert [r["skipped_steps"] for r in session.reports] == [0] * 4


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_the_trial_records_the_precision_it_trained_in(tmp_path, data, precision):
    from trainables.precision import resolve_precision

    session = run(tmp_path, data, with_training(trial(epochs=1), precision=precision))
    stamp = json.loads((session.checkpoints[-1] / TRIAL_FILE).read_text())["provenance"]
    assert stamp["precision"] == (resolve_precision("auto", "cpu") if precision == "auto" else precision)
    assert stamp["precision"] in ("fp32", "bf16")


def test_a_conv_family_trains_in_channels_last_on_the_cpu(tmp_path, data):
    session = run(tmp_path, data, trial(epochs=1))
    weights = {k: v for k, v in session.prepared_state.items() if v.dim() == 4}  # as handed to prepare
    assert weights and all(v.is_contiguous(memory_format=torch.channels_last) for v in weights.values())
    family = get_family("conv_vae")
    model = family.model_cls(family.config_cls(**FAMILY_CONFIG), INPUT_SHAPE)
    model.load_state_dict(load_checkpoint(session.checkpoints[-1])["model"])  # a contiguous model reads it


def test_fp32_counts_every_batch_as_a_step(tmp_path, data):
    session = run(tmp_path, data, trial(epochs=2))
    assert [(r["step"], r["skipped_steps"]) for r in session.reports] == [(4, 0), (8, 0)]
    assert adam_steps(session.checkpoints[-1]) == 8


def test_skipped_fp16_steps_are_not_counted_and_the_budget_counts_steps_taken(tmp_path, data, fp16_on_cpu,
                                                                             monkeypatch):
    overflowing(monkeypatch, lambda n: 20 <= n < 23)  # three more skips in epoch 2, after the scale settled
    config = with_training(trial(epochs=1), precision="fp16", batch_size=4, steps=30)
    session = run(tmp_path, data, config)
    steps = [r["step"] for r in session.reports]
    skipped = [r["skipped_steps"] for r in session.reports]
    assert steps[-1] == 30 == adam_steps(session.checkpoints[-1])  # the budget: 30 steps applied
    assert skipped[1] >= skipped[0] + 3  # the injected overflows
    batches = np.cumsum([r["train_rows"] for r in session.reports]) // 4
    assert [a + b for a, b in zip(steps, skipped)] == list(batches)  # taken + skipped = attempted
    assert load_checkpoint(session.checkpoints[-1])["skipped"] == skipped[-1]


def test_a_trial_whose_every_step_overflows_errors(tmp_path, data, fp16_on_cpu, monkeypatch):
    overflowing(monkeypatch, lambda n: True)
    session = FakeSession(tmp_path, *data)
    config = with_training(trial(epochs=3), precision="fp16")
    with pytest.raises(FloatingPointError, match=r"^training\.precision=fp16: the loss scaler skipped 4 of 4 "
                                                 r"optimisation steps \(gradients overflowed\); nothing was trained"):
        run_worker(config, session)
    assert session.reports == []  # no untrained numbers reported


def test_an_epoch_that_takes_no_step_errors(tmp_path, data, fp16_on_cpu, monkeypatch):
    overflowing(monkeypatch, lambda n: n >= 16)  # every step from epoch 2 on
    session = FakeSession(tmp_path, *data)
    config = with_training(trial(epochs=3), precision="fp16", batch_size=4)
    with pytest.raises(FloatingPointError, match="skipped all 16 optimisation steps of epoch 2"):
        run_worker(config, session)
    assert [r["epoch"] for r in session.reports] == [1]


def test_a_trial_skipping_more_than_half_its_steps_errors(tmp_path, data, fp16_on_cpu, monkeypatch):
    from trainables.loop import MAX_SKIPPED_SHARE

    overflowing(monkeypatch, lambda n: n >= 16 and n % 4)  # 12 of epoch 2's 16 steps
    session = FakeSession(tmp_path, *data)
    config = with_training(trial(epochs=3), precision="fp16", batch_size=4)
    with pytest.raises(FloatingPointError, match=r"of 32 optimisation steps by epoch 2, more than 50%") as info:
        run_worker(config, session)
    skipped = int(str(info.value).split("skipped ")[1].split(" of")[0])
    assert skipped > MAX_SKIPPED_SHARE * 32 and skipped >= 12 + session.reports[0]["skipped_steps"]


def test_step_budget_stops_mid_epoch_and_evaluates_once(tmp_path, data):
    config = trial(epochs=1, evaluate=StubEvaluation())
    config = replace(config, training=config.training.model_copy(update={"steps": 10}))  # 4 steps per epoch
    session = run(tmp_path, data, config)
    assert [r["step"] for r in session.reports] == [4, 8, 10]
    assert [("mig" in r) for r in session.reports] == [False, False, True]
    assert load_checkpoint(session.checkpoints[-1])["step"] == 10


def test_fp16_on_a_cpu_device_is_refused_when_the_trial_starts(tmp_path, data):
    """A trial that asked for a GPU and fell back to the CPU (resources.cpu_fallback) meets the
    spec's refusal at run time, before it trains."""
    session = FakeSession(tmp_path, *data, device="cpu")
    with pytest.raises(ValueError, match=r"^training\.precision: this trial trains on the CPU, but fp16"):
        run_worker(with_training(trial(epochs=1), precision="fp16"), session)
    assert session.reports == [] and session.prepared_state is None
