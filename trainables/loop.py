"""The per-worker training loop: epochs over a dataset shard, one report and checkpoint per epoch.

``run_worker`` trains one model: epochs over its dataset shard, a validation pass, one report
and one checkpoint per epoch (rank 0 checkpoints model, optimizer, epoch, snapshots and the
trial's description with its provenance), and, after the last epoch, the evaluation it was
handed (:attr:`TrialConfig.evaluate`; the loop itself knows no metric). It resumes from the
checkpoint its session hands it. ``train_fn_per_worker`` is the Ray Train entry point around it;
the Tune trial that turns a study spec into a :class:`TrialConfig` lives in ``study.driver``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from trainables.faults import active_fault
from trainables.precision import Amp
from trainables.protocol import supports, unwrap
from trainables.registry import get_family
from trainables.training import TrainingSpec

__all__ = ["TrialConfig", "Evaluate", "train_fn_per_worker", "run_worker", "trial_seed", "load_checkpoint",
           "load_snapshots", "build_model", "provenance"]

# The evaluation a study hands the loop: ``evaluate(model, device, held_out)`` -> named floats,
# where ``held_out(num)`` returns up to ``num`` validation images float32 ``(num, ...)``. It raises
# when a requested metric cannot be computed (a hole must not look like a result).
Evaluate = Callable[[torch.nn.Module, torch.device, Callable[[int], np.ndarray]], dict[str, float]]

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
    """Everything a worker needs to train one trial (picklable: it travels to Ray workers).

    Attributes:
        family: Registered family name.
        family_config: The family's config as JSON values (validated by its config class).
        training: The validated training spec.
        input_shape: Shape of one observation, e.g. ``(C, H, W)``.
        seed: The trial's seed (``trial_seed``); worker ``r`` seeds torch with ``seed + r``.
        threads: torch threads of each worker.
        snapshot_epochs: Epochs whose validation reconstructions are kept; None: every epoch.
        snapshot_samples: Fixed validation rows reconstructed at those epochs; 0: none.
        evaluate: The end-of-trial evaluation (see :data:`Evaluate`), or None for none.
        validation_metrics: The dataset's per-epoch metrics from the model's predictions
            (``PreparedData.validation_metrics``), or None.
        description: Extra JSON facts for ``trial.json`` (the study's evaluation settings...).
    """

    family: str
    family_config: dict[str, Any]
    training: TrainingSpec
    input_shape: tuple[int, ...]
    seed: int
    threads: int = 1
    snapshot_epochs: list[int] | None = None
    snapshot_samples: int = 8
    evaluate: Evaluate | None = None
    validation_metrics: Callable[[dict[str, torch.Tensor]], dict[str, float]] | None = None
    description: dict[str, Any] | None = None

    def __post_init__(self):
        if not isinstance(self.training, TrainingSpec):
            raise TypeError(f"TrialConfig.training: expected a TrainingSpec, got {type(self.training).__name__}")


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
        self.gpu_ids = [str(i) for i in ray.get_gpu_ids()]

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

        if self.gpu_ids and not torch.cuda.is_available():
            gpu_device(True, False)  # raises: a GPU was asked for, torch has no CUDA
        return ray.train.torch.get_device()

    def prepare(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model) if self.world_size > 1 else model.to(self.device())


def gpu_device(use_gpu: bool, cpu_fallback: bool) -> torch.device:
    """The trial's device: ``cuda`` when it asked for a GPU, else ``cpu``.

    Raises:
        RuntimeError: If the trial asked for a GPU, torch has no CUDA (a CPU wheel on a GPU node),
            and the study did not opt in to ``resources.cpu_fallback``: it must not train silently
            on the CPU.
    """
    if not use_gpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if cpu_fallback:
        return torch.device("cpu")
    raise RuntimeError(
        f"resources.gpus_per_trial: the trial asked for a GPU, but torch {torch.__version__} on this node has no "
        "CUDA; install a CUDA build of torch there, or set resources.cpu_fallback: true to train on the CPU"
    )


class TuneSession:
    """The single worker of a trial, running inside the Tune trial itself."""

    world_rank = 0
    world_size = 1

    def __init__(self, datasets: dict[str, Any], use_gpu: bool, cpu_fallback: bool = False):
        import ray

        _quiet_ray_data()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.gpu_ids = [str(i) for i in ray.get_gpu_ids()]
        self._datasets = datasets
        self._device = gpu_device(use_gpu, cpu_fallback)

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
    """Ray Train per-worker entry point; ``config`` is ``{"trial": TrialConfig}``."""
    run_worker(config["trial"], TrainSession())


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
    """Trains one model for ``training.epochs`` epochs (or ``training.steps`` steps), reporting
    once per epoch.

    A family may take over the optimisation step (GANs, FactorVAE's discriminator) by giving
    its module ``configure_optimizers(training) -> list[Optimizer]`` and
    ``training_step(batch, optimizers, amp) -> dict[str, Tensor]`` (scalar terms, ``loss`` among
    them); otherwise one optimizer of ``training.optimizer`` minimises ``model(batch).loss``.
    Forward passes run under ``training.precision``'s autocast (:class:`~trainables.precision.Amp`).
    Loss terms accumulate on the device; the host syncs once per epoch.

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
    started = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory)
            snapshots = load_snapshots(directory)
            started = _started_at(directory)
        model.load_state_dict(state["model"])
    stamp = provenance(device, config.threads, session.node_id, started)
    stamp["gpu_ids"] = list(getattr(session, "gpu_ids", []))  # the GPUs Ray assigned this trial
    model = session.prepare(model)  # on its device (DDP-wrapped with several workers) before the optimizer
    core = unwrap(model)
    if supports(core, "configure_optimizers"):
        optimizers = list(core.configure_optimizers(training))
    else:
        optimizers = [_optimizer(training.optimizer, model.parameters(), training.lr)]
    amp = Amp(training.precision, device)
    done = step = 0
    if state is not None:
        for optimizer, saved in zip(optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)  # moves the optimizer state to the parameters' device
        done = int(state["epoch"])
        step = int(state.get("step", 0))
        amp.load_state_dict(state.get("scaler", {}))
    fault = active_fault()
    params = {**config.family_config, **training.model_dump()}
    train_shard = session.shard("train")
    val_shard = session.shard("val") if session.world_rank == 0 else None
    snapshot_batch = None

    epoch = done
    while (step < training.steps) if training.steps is not None else (epoch < training.epochs):
        epoch += 1
        start = time.perf_counter()
        model.train()
        budget = None if training.steps is None else training.steps - step
        train_terms, seen, _, steps_done = _run_epoch(model, train_shard, training.batch_size, device, optimizers,
                                                      amp=amp, max_steps=budget)
        step += steps_done
        last = epoch == training.epochs if training.steps is None else step >= training.steps
        if fault is not None and fault.kind == "nan" and fault.matches(params, epoch):
            train_terms["loss"] = float("nan")  # injected by VAE_STUDY_FAULT (tests only)
        if not all(math.isfinite(v) for v in train_terms.values()):
            raise FloatingPointError(f"training loss became non-finite at epoch {epoch}: {train_terms}")
        metrics: dict[str, Any] = {"epoch": epoch, "step": step, **{f"train_{k}": v for k, v in train_terms.items()}}
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
            val_terms, _, predictions, _ = _run_epoch(core, val_shard, training.batch_size, device, None,
                                                      keep_first=config.snapshot_samples, amp=amp)
        metrics.update({f"val_{k}": v for k, v in val_terms.items()})
        if {"recon_loss", "kl"} <= set(val_terms):
            metrics["val_elbo"] = -(val_terms["recon_loss"] + val_terms["kl"])
        first = predictions.pop("__first_batch__", None)
        if predictions and supports(core, "validation_metrics"):
            metrics.update({f"val_{k}": v for k, v in core.validation_metrics(predictions).items()})
        if config.validation_metrics is not None:
            metrics.update({f"val_{k}": v for k, v in config.validation_metrics(predictions).items()})
        if snapshot_batch is None and first is not None:
            snapshot_batch = first
        if snapshot_batch is not None and _snapshot_due(config, epoch, last) and supports(core, "reconstruct"):
            _take_snapshot(snapshots, core, snapshot_batch, epoch)
        if last and config.evaluate is not None:
            core.eval()
            metrics.update(config.evaluate(core, device, _held_out(val_shard, training.batch_size)))
        metrics["epoch_seconds"] = time.perf_counter() - start
        stamp["ended_at"] = _now()
        # Ray copies the checkpoint into the trial's storage during report(); the local copy then goes.
        with tempfile.TemporaryDirectory(prefix="vae-study-ckpt-") as checkpoint_dir:
            _save_checkpoint(checkpoint_dir, core, optimizers, epoch, config, snapshots, stamp, step=step,
                             scaler=amp.state_dict())
            session.report(metrics, checkpoint_dir)
        _maybe_kill(fault, params, epoch)


def _snapshot_due(config: TrialConfig, epoch: int, last: bool) -> bool:
    if config.snapshot_samples <= 0:
        return False
    return config.snapshot_epochs is None or epoch in config.snapshot_epochs or last


def _take_snapshot(snapshots: dict[str, np.ndarray], model, batch: dict[str, torch.Tensor], epoch: int) -> None:
    """Adds the reconstructions of the fixed val rows at ``epoch`` (and the rows, once) to ``snapshots``."""
    if "inputs" not in snapshots:
        for name, value in batch.items():
            snapshots["inputs" if name == "image" else f"column_{name}"] = value.cpu().numpy()
    recon = model.reconstruct(batch)
    snapshots[f"epoch_{epoch:04d}"] = recon.float().cpu().numpy().astype(np.float16)
    if supports(model, "predict"):
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


def _first_rows(shard, num: int, batch_size: int) -> np.ndarray:
    """Up to ``num`` images of ``shard`` as float32 ``(num, ...)``."""
    parts, total = [], 0
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        parts.append(np.asarray(batch["image"], dtype=np.float32))
        total += len(parts[-1])
        if total >= num:
            break
    return np.concatenate(parts)[:num]


def _held_out(shard, batch_size: int) -> Callable[[int], np.ndarray]:
    """``held_out(num)``: up to ``num`` validation images of ``shard``, read on first use and cached."""
    cache: dict[int, np.ndarray] = {}

    def held_out(num: int) -> np.ndarray:
        if num not in cache:
            cache[num] = _first_rows(shard, num, batch_size)
        return cache[num]

    return held_out


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return optimizers[name](params, lr=lr)


def _run_epoch(model, shard, batch_size: int, device, optimizers, keep_first: int = 0, amp: Amp | None = None,
               max_steps: int | None = None):
    """One pass over ``shard``; trains when ``optimizers`` are given.

    Loss terms accumulate on the device (float64, weighted by rows) and come to the host in one
    transfer at the end of the pass: the pass syncs the host once, not once per batch.

    Returns:
        ``(mean terms, rows seen, predictions, optimisation steps)``: on evaluation passes,
        ``predictions`` holds the model outputs' per-sample ``predictions`` concatenated over the
        pass (on the CPU), and under ``"__first_batch__"`` the first ``keep_first`` rows of the
        shard (a dict of tensors).
    """
    amp = amp or Amp()
    core = unwrap(model)
    step = core.training_step if supports(core, "training_step") else None
    sums: dict[str, torch.Tensor] = {}
    collected: dict[str, list[torch.Tensor]] = {}
    first = None
    seen = steps = 0
    for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=torch.float32, device=device):
        if max_steps is not None and steps >= max_steps:
            break
        if optimizers is not None and step is not None:
            with amp.autocast():
                terms = step(batch, optimizers, amp)
        else:
            with amp.autocast():
                out = model(batch)
            if optimizers is not None:
                optimizers[0].zero_grad(set_to_none=True)
                amp.backward(out.loss)
                amp.step(optimizers[0])
            else:  # only evaluation passes score predictions; training ones would copy them for nothing
                for name, value in getattr(out, "predictions", {}).items():
                    collected.setdefault(name, []).append(value.detach())
            terms = out.terms()
        if optimizers is not None:
            amp.update()
            steps += 1
        if optimizers is None and keep_first and first is None:
            first = {k: v[:keep_first] for k, v in batch.items()}
        n = len(next(iter(batch.values())))  # rows of this batch (any column)
        for name, value in terms.items():
            weighted = value.detach().double() * n
            sums[name] = sums[name] + weighted if name in sums else weighted
        seen += n
    if seen == 0:
        raise RuntimeError("the dataset shard yielded no rows")
    names = list(sums)
    totals = torch.stack([sums[name] for name in names]).cpu().tolist() if names else []  # the one host sync
    predictions: dict[str, Any] = {name: torch.cat(parts).float().cpu() for name, parts in collected.items()}
    if first is not None:
        predictions["__first_batch__"] = first
    return {name: total / seen for name, total in zip(names, totals)}, seen, predictions, steps


def _save_checkpoint(directory: str, model, optimizers, epoch: int, config: TrialConfig,
                     snapshots: dict[str, np.ndarray], stamp: dict[str, Any] | None = None, *, step: int = 0,
                     scaler: dict[str, Any] | None = None) -> None:
    state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers], "epoch": epoch}
    if step:
        state["step"] = step
    if scaler:
        state["scaler"] = scaler  # fp16 loss scale
    torch.save(state, os.path.join(directory, CHECKPOINT_FILE))
    if snapshots:
        np.savez(os.path.join(directory, SNAPSHOT_FILE), **snapshots)
    Path(directory, TRIAL_FILE).write_text(json.dumps(describe_trial(config, stamp), indent=2))


def describe_trial(config: TrialConfig, stamp: dict[str, Any] | None = None) -> dict[str, Any]:
    """``trial.json``: the trial's family, config, training, input shape, seed and provenance (JSON)."""
    return {
        "family": config.family, "family_config": config.family_config,
        "training": config.training.model_dump(mode="json"), "input_shape": list(config.input_shape),
        "seed": config.seed, "threads": config.threads, "snapshot_epochs": config.snapshot_epochs,
        "snapshot_samples": config.snapshot_samples, **(config.description or {}),
        "provenance": stamp or {},
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _started_at(directory: str | Path) -> str | None:
    """The start time an earlier run of this trial recorded in its checkpoint (kept on resume)."""
    path = Path(directory) / TRIAL_FILE
    try:
        return json.loads(path.read_text()).get("provenance", {}).get("started_at")
    except (OSError, ValueError, AttributeError):
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(device: torch.device, threads: int, node_id: str | None = None,
               started_at: str | None = None) -> dict[str, Any]:
    """Where and with what this trial trains, stamped by the trial itself (``trial.json``).

    Returns:
        ``torch_version``, ``ray_version``, ``optuna_version``, ``numpy_version``, ``git_sha`` and
        ``git_dirty`` (None outside a git checkout, e.g. a ``ray job`` working-dir copy), ``hostname``,
        ``node_id`` (Ray's), ``device`` (``cpu`` or the CUDA device name), ``threads``,
        ``started_at`` (UTC, ISO 8601; kept from the first run when resumed); ``ended_at`` is
        set at each checkpoint.
    """
    import optuna
    import ray

    sha = _git("rev-parse", "--verify", "-q", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if sha else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "torch_version": torch.__version__, "ray_version": ray.__version__, "optuna_version": optuna.__version__,
        "numpy_version": np.__version__, "git_sha": sha, "git_dirty": None if status is None else bool(status),
        "hostname": platform.node(), "node_id": node_id, "device": name, "threads": int(threads),
        "started_at": started_at or _now(), "ended_at": None, "gpu_ids": [],
    }
