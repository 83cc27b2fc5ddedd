"""The sessions a worker trains in (:class:`~trainables.protocol.Session`): Ray Train and Ray Tune.

:class:`TrainSession` is a worker of a Ray Train ``TorchTrainer`` (``train_fn_per_worker`` is its
entry point); :class:`TuneSession` is the single worker running inside a Tune trial. Where a
session is built, it is wrapped by :func:`trainables.faults.with_faults`, which injects the test
faults of ``VAE_STUDY_FAULT`` (and returns the session itself when the variable is unset).
"""

from __future__ import annotations

from typing import Any

import torch

from trainables.faults import with_faults
from trainables.loop import run_worker
from trainables.protocol import RestoredCheckpoint, Shard

__all__ = ["TrainSession", "TuneSession", "gpu_device", "train_fn_per_worker"]


def _quiet_ray_data() -> None:
    """No per-epoch Ray Data progress bars in the trial logs (Tune's status table shows progress)."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-epoch "execution finished" lines


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


class TrainSession:
    """A worker of a Ray Train ``TorchTrainer``."""

    def __init__(self):
        import ray.train

        _quiet_ray_data()
        context = ray.train.get_context()
        self.node_id: str | None = ray.get_runtime_context().get_node_id()
        self.world_rank: int = context.get_world_rank()
        self.world_size: int = context.get_world_size()
        self.gpu_ids: list[str] = [str(i) for i in ray.get_gpu_ids()]

    def report(self, metrics: dict[str, float | str], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def checkpoint(self) -> RestoredCheckpoint | None:
        import ray.train

        return ray.train.get_checkpoint()

    def shard(self, name: str) -> Shard:
        import ray.train

        return ray.train.get_dataset_shard(name)

    def device(self) -> torch.device:
        import ray.train.torch

        if self.gpu_ids and not torch.cuda.is_available():
            gpu_device(True, False)  # raises: a GPU was asked for, torch has no CUDA
        return ray.train.torch.get_device()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model) if self.world_size > 1 else model.to(self.device())


class TuneSession:
    """The single worker of a trial, running inside the Tune trial itself.

    Args:
        datasets: The trial's Ray datasets by split name (``train``, ``val``).
        use_gpu: Whether the trial asked for a GPU.
        cpu_fallback: Train on the CPU when it did and torch has no CUDA (see :func:`gpu_device`).
    """

    world_rank = 0
    world_size = 1

    def __init__(self, datasets: dict[str, Any], use_gpu: bool, cpu_fallback: bool = False):
        import ray

        _quiet_ray_data()
        self.node_id: str | None = ray.get_runtime_context().get_node_id()
        self.gpu_ids: list[str] = [str(i) for i in ray.get_gpu_ids()]
        self._datasets = datasets
        self._device = gpu_device(use_gpu, cpu_fallback)

    def report(self, metrics: dict[str, float | str], checkpoint_dir: str | None) -> None:
        import ray.tune

        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=checkpoint)

    def checkpoint(self) -> RestoredCheckpoint | None:
        import ray.tune

        return ray.tune.get_checkpoint()

    def shard(self, name: str) -> Shard:
        return self._datasets[name].iterator()

    def device(self) -> torch.device:
        return self._device

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self._device)


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train per-worker entry point; ``config`` is ``{"trial": TrialConfig}`` (Ray Train's ``train_loop_config``)."""
    trial = config["trial"]
    run_worker(trial, with_faults(TrainSession(), trial))
