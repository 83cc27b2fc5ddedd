"""The training loop: a per-worker function and the Tune trial (driver) that runs it.

``train_fn_per_worker`` trains one model: epochs over its dataset shard, a validation pass,
one report and one checkpoint per epoch (rank 0 checkpoints model, optimizer and epoch),
and the evaluation metrics (MIG, ...) after the last epoch. It resumes from the checkpoint
its session hands it.

``train_driver_fn`` is the Ray Tune function trainable. With ``resources.num_workers == 1``
it runs the per-worker function itself, reporting through Tune; a ``TorchTrainer`` would
add ~16 s of start-up and ~2 s per report to every trial for no parallelism. With more
workers it launches a Train V2 ``TorchTrainer`` (DDP) whose reports reach Tune through
``TuneReportCallback``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trainables.faults import active_fault
from trainables.registry import get_family

__all__ = ["TrialConfig", "train_fn_per_worker", "train_driver_fn", "run_worker", "trial_seed", "load_checkpoint",
           "load_snapshots"]

CHECKPOINT_FILE = "checkpoint.pt"
SNAPSHOT_FILE = "snapshots.npz"
TRIAL_FILE = "trial.json"
REPEAT_KEY = "__trial_index__"  # set by tune.search.Repeater: the repeat index of a configuration


def trial_seed(study_seed: int, repeat: int) -> int:
    """The seed of a trial: derived from the study seed and the trial's repeat index.

    Repeats of one configuration get distinct seeds; the same repeat index of two
    configurations gets the same seed (common random numbers across configurations).
    """
    return int(np.random.SeedSequence([study_seed, repeat]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class TrialConfig:
    """Everything a worker needs to train one trial (plain values, picklable)."""

    family: str
    family_config: dict[str, Any]
    training: dict[str, Any]
    input_shape: tuple[int, ...]
    seed: int
    metrics: list[str] = field(default_factory=list)
    num_train: int = 10_000
    threads: int = 1
    ground_truth: Any = None  # datasets.base.ArrayGroundTruthData of the held-out rows, or None
    snapshot_epochs: list[int] | None = None  # epochs whose val reconstructions are kept; None: every epoch
    snapshot_samples: int = 8  # fixed val rows reconstructed at those epochs; 0: none


class Session(Protocol):
    """Where a worker reports to: Ray Train (inside a TorchTrainer) or Ray Tune (in the trial)."""

    world_rank: int
    world_size: int
    node_id: str | None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...

    def checkpoint(self): ...

    def shard(self, name: str): ...

    def device(self) -> torch.device: ...

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module: ...


def _quiet_ray_data() -> None:
    """No per-epoch Ray Data progress bars in the trial logs (Tune's status table shows progress)."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-epoch "execution finished" lines


class TrainSession:
    """A worker of a Ray Train ``TorchTrainer``."""

    def __init__(self):
        import ray.train

        _quiet_ray_data()
        context = ray.train.get_context()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.world_rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def report(self, metrics, checkpoint_dir):
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def shard(self, name):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def device(self):
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model) if self.world_size > 1 else model.to(self.device())


class TuneSession:
    """The single worker of a trial, running inside the Tune trial itself."""

    world_rank = 0
    world_size = 1

    def __init__(self, datasets: dict[str, Any], use_gpu: bool):
        import ray

        _quiet_ray_data()
        self.node_id = ray.get_runtime_context().get_node_id()
        self._datasets = datasets
        self._device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def report(self, metrics, checkpoint_dir):
        import ray.tune

        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=checkpoint)

    def checkpoint(self):
        import ray.tune

        return ray.tune.get_checkpoint()

    def shard(self, name):
        return self._datasets[name].iterator()

    def device(self):
        return self._device

    def prepare(self, model):
        return model.to(self._device)


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train per-worker entry point; ``config`` is ``asdict(TrialConfig)``."""
    run_worker(TrialConfig(**config), TrainSession())


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Reads a trial checkpoint: ``model`` state dict, ``optimizers`` (a list of state dicts) and
    ``epoch`` (epochs done).

    Tensors only: ``torch.load(weights_only=True)`` refuses pickled objects.

    Raises:
        FileNotFoundError: If the directory holds no checkpoint file.
        pickle.UnpicklingError: If the file holds anything but tensors and plain containers.
    """
    return torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def build_model(config: TrialConfig) -> torch.nn.Module:
    """The trial's model, from its family name and config."""
    family = get_family(config.family)
    return family.model_cls(family.config_cls(**config.family_config), config.input_shape)


def run_worker(config: TrialConfig, session: Session) -> None:
    """Trains one model for ``training.epochs`` epochs, reporting once per epoch.

    A family may take over the optimisation step (GANs, FactorVAE's discriminator) by giving
    its module ``configure_optimizers(training) -> list[Optimizer]`` and
    ``training_step(batch, optimizers) -> dict[str, Tensor]`` (scalar terms, ``loss`` among
    them); otherwise one optimizer of ``training.optimizer`` minimises ``model(batch).loss``.

    Raises:
        FloatingPointError: If the training loss becomes NaN or infinite; the trial errors.
    """
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed + session.world_rank)
    training = config.training
    device = session.device()
    model = build_model(config)
    state = None
    checkpoint = session.checkpoint()
    snapshots: dict[str, np.ndarray] = {}
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory)
            snapshots = load_snapshots(directory)
        model.load_state_dict(state["model"])
    model = session.prepare(model)  # on its device (DDP-wrapped with several workers) before the optimizer
    core = model.module if hasattr(model, "module") else model
    if hasattr(core, "configure_optimizers"):
        optimizers = list(core.configure_optimizers(training))
    else:
        optimizers = [_optimizer(training["optimizer"], model.parameters(), training["lr"])]
    done = 0
    if state is not None:
        for optimizer, saved in zip(optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)  # moves the optimizer state to the parameters' device
        done = int(state["epoch"])
    fault = active_fault()
    params = {**config.family_config, **config.training}
    train_shard = session.shard("train")
    val_shard = session.shard("val") if session.world_rank == 0 else None
    snapshot_batch = None

    for epoch in range(done + 1, training["epochs"] + 1):
        start = time.perf_counter()
        model.train()
        train_terms, seen, _ = _run_epoch(model, train_shard, training["batch_size"], device, optimizers)
        if fault is not None and fault.kind == "nan" and fault.matches(params, epoch):
            train_terms["loss"] = float("nan")  # injected by VAE_STUDY_FAULT (tests only)
        if not all(math.isfinite(v) for v in train_terms.values()):
            raise FloatingPointError(f"training loss became non-finite at epoch {epoch}: {train_terms}")
        metrics: dict[str, Any] = {"epoch": epoch, **{f"train_{k}": v for k, v in train_terms.items()}}
        metrics["train_images_per_s"] = seen * session.world_size / (time.perf_counter() - start)
        metrics["train_rows"] = seen  # rows this worker read this epoch
        if session.node_id is not None:
            metrics["node_id"] = session.node_id  # which Ray node trained it
        if session.world_rank != 0:
            metrics["epoch_seconds"] = time.perf_counter() - start
            session.report(metrics, None)
            _maybe_kill(fault, params, epoch)
            continue
        core.eval()
        with torch.no_grad():
            val_terms, _, predictions = _run_epoch(core, val_shard, training["batch_size"], device, None,
                                                   keep_first=config.snapshot_samples)
        metrics.update({f"val_{k}": v for k, v in val_terms.items()})
        if {"recon_loss", "kl"} <= set(val_terms):
            metrics["val_elbo"] = -(val_terms["recon_loss"] + val_terms["kl"])
        first = predictions.pop("__first_batch__", None)
        if predictions and hasattr(core, "validation_metrics"):
            metrics.update({f"val_{k}": v for k, v in core.validation_metrics(predictions).items()})
        if snapshot_batch is None and first is not None:
            snapshot_batch = first
        if snapshot_batch is not None and _snapshot_due(config, epoch) and hasattr(core, "reconstruct"):
            _take_snapshot(snapshots, core, snapshot_batch, epoch)
        if epoch == training["epochs"]:
            metrics.update(evaluate(core, config, device, val_shard, training["batch_size"]))
        metrics["epoch_seconds"] = time.perf_counter() - start
        # Ray copies the checkpoint into the trial's storage during report(); the local copy then goes.
        with tempfile.TemporaryDirectory(prefix="vae-study-ckpt-") as checkpoint_dir:
            _save_checkpoint(checkpoint_dir, core, optimizers, epoch, config, snapshots)
            session.report(metrics, checkpoint_dir)
        _maybe_kill(fault, params, epoch)


def _snapshot_due(config: TrialConfig, epoch: int) -> bool:
    if config.snapshot_samples <= 0:
        return False
    return config.snapshot_epochs is None or epoch in config.snapshot_epochs or epoch == config.training["epochs"]


def _take_snapshot(snapshots: dict[str, np.ndarray], model, batch: dict[str, torch.Tensor], epoch: int) -> None:
    """Adds the reconstructions of the fixed val rows at ``epoch`` (and the rows, once) to ``snapshots``."""
    if "inputs" not in snapshots:
        for name, value in batch.items():
            snapshots["inputs" if name == "image" else f"column_{name}"] = value.cpu().numpy()
    recon = model.reconstruct(batch)
    snapshots[f"epoch_{epoch:04d}"] = recon.float().cpu().numpy().astype(np.float16)
    if hasattr(model, "predict"):
        for name, value in model.predict(batch).items():
            snapshots[f"epoch_{epoch:04d}_{name}"] = value.float().cpu().numpy()


def load_snapshots(directory: str | Path) -> dict[str, np.ndarray]:
    """The reconstruction snapshots a checkpoint carries (``snapshots.npz``), or ``{}``.

    Keys: ``inputs`` ``(K, ...)`` the fixed validation rows; ``epoch_NNNN`` ``(K, ...)`` float16
    mean reconstructions after epoch NNNN; ``epoch_NNNN_<task>`` task predictions ``(K, ...)``;
    ``column_<name>`` ``(K, ...)`` the rows' other columns (task targets).
    """
    path = Path(directory) / SNAPSHOT_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _maybe_kill(fault, params: dict[str, Any], epoch: int) -> None:
    """Kills this worker after the report of ``epoch`` when VAE_STUDY_FAULT says so (tests only)."""
    if fault is not None and fault.kind == "kill" and fault.matches(params, epoch):
        fault.kill()


def evaluate(model: torch.nn.Module, config: TrialConfig, device: torch.device, val_shard=None,
             batch_size: int = 256) -> dict[str, float]:
    """The evaluation metrics of ``config.metrics``.

    Ground-truth metrics (MIG, ...) score the held-out factors; sample metrics (``kind="samples"``)
    compare ``model.sample`` with up to ``num_train`` validation images.
    """
    from analysis.checkpoints import representation_fn
    from analysis.metrics import METRICS

    if not config.metrics:
        return {}
    model.eval()
    results: dict[str, float] = {}
    held_out = None
    encode = representation_fn(model, device) if hasattr(model, "encode") else None
    for name in config.metrics:
        metric = METRICS[name]
        rng = np.random.default_rng(config.seed)
        if metric.kind == "samples":
            if not hasattr(model, "sample") or val_shard is None:
                continue
            if held_out is None:
                held_out = _first_rows(val_shard, config.num_train, batch_size)
            results.update(metric.compute(held_out, _sampler(model, device), random_state=rng))
        elif config.ground_truth is not None and encode is not None:
            results.update(metric.compute(config.ground_truth, encode, random_state=rng, num_train=config.num_train))
    return results


def _first_rows(shard, num: int, batch_size: int) -> np.ndarray:
    """Up to ``num`` images of ``shard`` as float32 ``(num, ...)``."""
    parts, total = [], 0
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        parts.append(np.asarray(batch["image"], dtype=np.float32))
        total += len(parts[-1])
        if total >= num:
            break
    return np.concatenate(parts)[:num]


def _sampler(model, device):
    """``(num, random_state) -> float32 (num, ...)`` samples of ``model`` as numpy."""

    def sample(num: int, random_state: np.random.Generator) -> np.ndarray:
        generator = torch.Generator().manual_seed(int(random_state.integers(2**31)))
        return model.sample(num, generator=generator).float().cpu().numpy()

    return sample


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return optimizers[name](params, lr=lr)


def _run_epoch(model, shard, batch_size: int, device, optimizers, keep_first: int = 0):
    """One pass over ``shard``; trains when ``optimizers`` are given.

    Returns:
        ``(mean terms, rows seen, predictions)``: on evaluation passes, ``predictions`` holds the
        model outputs' per-sample ``predictions`` concatenated over the pass, and under
        ``"__first_batch__"`` the first ``keep_first`` rows of the shard (a dict of tensors).
    """
    core = model.module if hasattr(model, "module") else model
    step = getattr(core, "training_step", None)
    sums: dict[str, float] = {}
    collected: dict[str, list[torch.Tensor]] = {}
    first = None
    seen = 0
    for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=torch.float32, device=device):
        if optimizers is not None and step is not None:
            terms = step(batch, optimizers)
        else:
            out = model(batch)
            if optimizers is not None:
                optimizers[0].zero_grad(set_to_none=True)
                out.loss.backward()
                optimizers[0].step()
            else:  # only evaluation passes score predictions; training ones would copy them for nothing
                for name, value in getattr(out, "predictions", {}).items():
                    collected.setdefault(name, []).append(value.detach().cpu())
            terms = out.terms()
        if optimizers is None and keep_first and first is None:
            first = {k: v[:keep_first] for k, v in batch.items()}
        n = len(batch["image"])
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * n
        seen += n
    if seen == 0:
        raise RuntimeError("the dataset shard yielded no rows")
    predictions: dict[str, Any] = {name: torch.cat(parts) for name, parts in collected.items()}
    if first is not None:
        predictions["__first_batch__"] = first
    return {name: total / seen for name, total in sums.items()}, seen, predictions


def _save_checkpoint(directory: str, model, optimizers, epoch: int, config: TrialConfig,
                     snapshots: dict[str, np.ndarray]) -> None:
    torch.save({"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers], "epoch": epoch},
               os.path.join(directory, CHECKPOINT_FILE))
    if snapshots:
        np.savez(os.path.join(directory, SNAPSHOT_FILE), **snapshots)
    described = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "ground_truth"}
    Path(directory, TRIAL_FILE).write_text(json.dumps(described, indent=2))


def train_driver_fn(config: dict[str, Any], *, spec_json: str, data: dict[str, Any]) -> None:
    """The Tune trial: derives the trial's settings and seed, then trains.

    Args:
        config: The trial's sampled search-space values, plus ``__trial_index__`` (repeat).
        spec_json: The study spec as JSON.
        data: ``{"train": Dataset, "val": Dataset, "input_shape": (C, H, W),
            "ground_truth": ArrayGroundTruthData | None}``.
    """
    import ray.tune

    from study.spec import StudySpec

    spec = StudySpec.model_validate_json(spec_json)
    params = {k: v for k, v in config.items() if k != REPEAT_KEY}
    family_config, training = spec.trial_settings(params)
    resources = spec.resources
    trial = TrialConfig(
        family=spec.trial_family(params),
        family_config=family_config.model_dump(mode="json"),
        training=training.model_dump(mode="json"),
        input_shape=tuple(data["input_shape"]),
        seed=trial_seed(spec.seed, int(config[REPEAT_KEY])),
        metrics=list(spec.evaluation.metrics),
        num_train=spec.evaluation.num_train,
        threads=max(1, int(resources.cpus_per_trial // resources.num_workers)),
        ground_truth=data["ground_truth"],
        snapshot_epochs=spec.evaluation.snapshot_epochs,
        snapshot_samples=spec.evaluation.snapshot_samples,
    )
    datasets = {"train": data["train"], "val": data["val"]}
    if resources.num_workers == 1 and resources.trainer == "auto":
        run_worker(trial, TuneSession(datasets, use_gpu=resources.gpus_per_trial > 0))
        return

    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    context = ray.tune.get_context()
    restored = ray.tune.get_checkpoint()
    per_worker = {"CPU": resources.cpus_per_trial / resources.num_workers}
    if resources.gpus_per_trial:
        per_worker["GPU"] = resources.gpus_per_trial / resources.num_workers
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config=asdict(trial),
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.num_workers, use_gpu=resources.gpus_per_trial > 0, resources_per_worker=per_worker
        ),
        datasets=datasets,
        # Train's DataConfig would replace each dataset's execution options (a streamed dataset's
        # read-ahead cap among them): hand them over as the dataset was built.
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"],
            execution_options={name: ds.context.execution_options for name, ds in datasets.items()},
        ),
        run_config=ray.train.RunConfig(
            name=f"{context.get_experiment_name()}-{context.get_trial_id()}",
            storage_path=str(Path(spec.study_dir, "train_runs")),
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
        resume_from_checkpoint=ray.train.Checkpoint(restored.path, restored.filesystem) if restored else None,
    )
    trainer.fit()
