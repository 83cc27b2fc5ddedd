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

from pathlib import Path
from typing import Any

from analysis.evaluation import Evaluator
from study.spec import DATASET_PREFIX, StudySpec
from trainables.faults import with_faults
from trainables.loop import run_worker
from trainables.session import TuneSession, train_fn_per_worker
from trainables.trial import REPEAT_KEY, TrialConfig, trial_seed

__all__ = ["train_driver_fn", "trial_config"]


def trial_config(spec: StudySpec, config: dict[str, Any], data: dict[str, Any]) -> TrialConfig:
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
        input_shape=tuple(data["input_shape"]),
        seed=seed,
        threads=max(1, int(resources.cpus_per_trial // resources.num_workers)),
        snapshot_epochs=evaluation.snapshot_epochs,
        snapshot_samples=evaluation.snapshot_samples,
        evaluate=Evaluator(list(evaluation.metrics), evaluation.num_train, seed, data["ground_truth"],
                           num_test=evaluation.num_test) if evaluation.metrics else None,
        validation_metrics=data.get("validation_metrics"),
        description={"evaluation": {"metrics": list(evaluation.metrics), "num_train": evaluation.num_train,
                                    "num_test": evaluation.num_test},
                     "repeat": int(config[REPEAT_KEY])},
    )


def _datasets(spec: StudySpec, config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The trial's Ray datasets: a searched ``dataset.train_fraction`` keeps that prefix of the
    train rows (loaders store them in one seeded order, so smaller fractions nest)."""
    train = data["train"]
    fraction = config.get(f"{DATASET_PREFIX}train_fraction")
    if fraction is not None:
        train = train.limit(max(1, round(float(fraction) * data["num_train"])))
    return {"train": train, "val": data["val"]}


def train_driver_fn(config: dict[str, Any], *, spec_json: str, data: dict[str, Any]) -> None:
    """The Tune trial: derives the trial's settings and seed, then trains.

    Args:
        config: The trial's sampled search-space values, plus ``__trial_index__`` (repeat).
        spec_json: The study spec as JSON.
        data: ``{"train": Dataset, "val": Dataset, "num_train": int, "input_shape": (C, H, W),
            "ground_truth": ArrayGroundTruthData | None, "validation_metrics": callable | None}``.
    """
    import ray.tune

    spec = StudySpec.model_validate_json(spec_json)
    trial = trial_config(spec, config, data)
    resources = spec.resources
    datasets = _datasets(spec, config, data)
    if resources.num_workers == 1 and resources.trainer == "auto":
        run_worker(trial, with_faults(TuneSession(datasets, use_gpu=resources.gpus_per_trial > 0,
                                                  cpu_fallback=resources.cpu_fallback), trial))
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
            storage_path=str(Path(spec.study_dir, "train_runs")),
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
        resume_from_checkpoint=ray.train.Checkpoint(restored.path, restored.filesystem) if restored else None,
    )
    trainer.fit()
