"""The Tune trial (driver): a study spec and one sampled configuration -> a trained trial.

``train_driver_fn`` is the Ray Tune function trainable. It derives the trial's family config,
training spec and seed from the spec and the sampled values, hands the loop its evaluation
(:class:`analysis.evaluation.Evaluator`) and the dataset's per-epoch metrics, and trains: with
``resources.num_workers == 1`` it runs the per-worker loop itself, reporting through Tune (a
``TorchTrainer`` would add ~16 s of start-up and ~2 s per report for no parallelism); with more
workers it launches a Train V2 ``TorchTrainer`` (DDP) whose reports reach Tune through
``TuneReportCallback``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from analysis.evaluation import Evaluator
from datasets.base import ArrayGroundTruthData
from datasets.registry import PreparedData, fraction_rows
from study.spec import DATASET_PREFIX, StudySpec
from trainables.faults import with_faults
from trainables.loop import run_worker
from trainables.session import TuneSession, train_fn_per_worker
from trainables.trial import REPEAT_KEY, TrialConfig, trial_seed

__all__ = ["TrialData", "train_driver_fn", "trial_config"]


@dataclass(frozen=True)
class TrialData:
    """What every trial of a study is handed (once, through Ray's object store): the data splits and
    what the loop and the evaluation need to know of them.

    Attributes:
        train: The train rows: a ``ray.data.Dataset``, or :class:`~datasets.device.DeviceData`
            placed on the trial's device.
        val: The validation rows, likewise.
        num_train: Train rows (a searched ``dataset.train_fraction`` keeps a prefix of them).
        input_shape: Shape of one observation, e.g. ``(C, H, W)``.
        ground_truth: The validation rows with their factors, or None when the data has none.
        validation_metrics: The dataset's per-epoch metrics from the model's predictions, or None.
    """

    train: Any
    val: Any
    num_train: int
    input_shape: tuple[int, ...]
    ground_truth: ArrayGroundTruthData | None
    validation_metrics: Callable[[dict[str, Any]], dict[str, float]] | None

    @classmethod
    def place(cls, prepared: PreparedData, placement: Literal["device", "stream"]) -> TrialData:
        """The prepared data on each trial's device (batched there by index) or in Ray Data (Ray must
        be running)."""
        splits = prepared.to_device() if placement == "device" else prepared.to_ray()
        return cls(train=splits["train"], val=splits["val"], num_train=prepared.describe().num_train,
                   input_shape=tuple(prepared.input_shape), ground_truth=prepared.ground_truth,
                   validation_metrics=prepared.validation_metrics)


def trial_config(spec: StudySpec, config: dict[str, Any], data: TrialData) -> TrialConfig:
    """The :class:`TrialConfig` of the trial with sampled ``config`` (search-space values and
    ``__trial_index__``, the repeat index that Tune's trial config carries)."""
    params = {k: v for k, v in config.items() if k != REPEAT_KEY}
    family_config, training = spec.trial_settings(params)
    seed = trial_seed(spec.seed, int(config[REPEAT_KEY]))
    evaluation = spec.evaluation
    resources = spec.resources
    return TrialConfig(
        family=spec.trial_family(params),
        family_config=family_config,
        training=training,
        input_shape=data.input_shape,
        seed=seed,
        threads=max(1, int(resources.cpus_per_trial // resources.num_workers)),
        snapshot_epochs=evaluation.snapshot_epochs,
        snapshot_samples=evaluation.snapshot_samples,
        evaluate=Evaluator(list(evaluation.metrics), evaluation.num_train, seed, data.ground_truth,
                           num_test=evaluation.num_test, probe_label=evaluation.probe_label)
        if evaluation.metrics else None,
        validation_metrics=data.validation_metrics,
        description={"evaluation": {"metrics": list(evaluation.metrics), "num_train": evaluation.num_train,
                                    "num_test": evaluation.num_test},
                     "repeat": int(config[REPEAT_KEY])},
    )


def _datasets(config: dict[str, Any], data: TrialData) -> dict[str, Any]:
    """The trial's datasets: a searched ``dataset.train_fraction`` keeps that prefix of the train
    rows (loaders store them in one seeded order, so smaller fractions nest)."""
    train = data.train
    key = f"{DATASET_PREFIX}train_fraction"
    if key in config:  # StudySpec.check_data refused a fraction that keeps no row
        train = train.limit(max(1, fraction_rows(float(config[key]), data.num_train)))
    return {"train": train, "val": data.val}


def train_driver_fn(config: dict[str, Any], *, spec_json: str, data: TrialData) -> None:
    """The Tune trial: derives the trial's settings and seed, then trains.

    Args:
        config: The trial's sampled search-space values, plus ``__trial_index__`` (repeat).
        spec_json: The study spec as JSON.
        data: The study's data, handed to every trial.
    """
    spec = StudySpec.model_validate_json(spec_json)
    trial = trial_config(spec, config, data)
    resources = spec.resources
    datasets = _datasets(config, data)
    if resources.in_process:
        run_worker(trial, with_faults(TuneSession(datasets, use_gpu=resources.gpus_per_trial > 0,
                                                  cpu_fallback=resources.cpu_fallback), trial))
    else:
        _torch_trainer(spec, trial, datasets).fit()


def _torch_trainer(spec: StudySpec, trial: TrialConfig, datasets: dict[str, Any]):
    """A Train V2 ``TorchTrainer`` (DDP over ``resources.num_workers`` workers) for the trial, resuming
    from the Tune trial's checkpoint; its reports reach Tune through ``TuneReportCallback``."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = spec.resources
    context = ray.tune.get_context()
    restored = ray.tune.get_checkpoint()
    per_worker = {"CPU": resources.cpus_per_trial / resources.num_workers}
    if resources.gpus_per_trial:
        per_worker["GPU"] = resources.gpus_per_trial / resources.num_workers
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"trial": trial},
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
            storage_path=f"{spec.study_location}/train_runs",
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
        resume_from_checkpoint=ray.train.Checkpoint(restored.path, restored.filesystem) if restored else None,
    )
