"""The study spec: one YAML file -> a validated :class:`StudySpec`.

Every section forbids unknown keys and bounds its numbers. The ``family`` and ``dataset``
sections are validated against the registered family's config class and the dataset's
options class. Errors carry the dotted path of the field (``family.beta``) so the CLI can
print them on one line (:func:`format_error`).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from analysis.cli import one_line, shorten
from analysis.evaluation import metric_requirement
from analysis.metrics import METRICS, metric_key_modes
from analysis.results import SPEC_FILE, EvaluationInfo, ObjectiveInfo, StudyDir, StudyFileError, StudyInfo
from datasets.registry import DataDescription, DatasetOptions, fraction_rows, get_dataset
from datasets.storage import is_uri
from study.params import (
    FAMILY_KEY,
    CategoricalParam,
    FamilySpace,
    FixedParam,
    RangeParam,
    SearchEntry,
    SpaceEntry,
    grid_points,
    grid_size,
    space_entries,
)
from trainables.precision import FP16_ON_CPU
from trainables.protocol import supports
from trainables.registry import get_family
from trainables.training import TrainingSpec

__all__ = [
    "StudySpec",
    "SpecError",
    "load_spec",
    "apply_overrides",
    "format_error",
    "safe_yaml",
    "DATASET_PREFIX",
]

MAX_SPEC_BYTES = 1 << 20  # a study spec is a page of YAML, not a data file
DATASET_PREFIX = "dataset."  # search-space keys of a dataset option searched per trial (dataset.train_fraction)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SpecError(ValueError):
    """A study spec that cannot run; ``str(err)`` is one line naming the field."""


class ObjectiveSpec(BaseModel):
    """What the search optimises: one metric, or lists of metrics and modes (multi-objective)."""

    model_config = _FROZEN
    metric: str | list[str] = "mig"
    mode: Literal["min", "max"] | list[Literal["min", "max"]] = "max"

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        if isinstance(self.metric, list) != isinstance(self.mode, list):
            raise ValueError("objective.metric and objective.mode must both be single values or both lists")
        if isinstance(self.metric, list) and (len(self.metric) != len(self.mode) or len(self.metric) < 2):
            raise ValueError(
                f"objective: multi-objective needs >= 2 metrics and one mode each, but got "
                f"metric={self.metric}, mode={self.mode}"
            )
        return self

    @property
    def metrics(self) -> list[str]:
        return self.metric if isinstance(self.metric, list) else [self.metric]

    @property
    def modes(self) -> list[str]:
        return self.mode if isinstance(self.mode, list) else [self.mode]

    @property
    def multi(self) -> bool:
        return isinstance(self.metric, list)


class SearchSpec(BaseModel):
    """How configurations are proposed (Optuna samplers through Ray Tune's OptunaSearch)."""

    model_config = _FROZEN
    algorithm: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    num_samples: int | None = Field(None, gt=0, le=100_000)  # configurations; grid: default all of them
    repeats: int = Field(1, ge=1, le=100)  # runs of each configuration, with distinct seeds
    max_concurrent_trials: int | None = Field(None, gt=0)  # None: as many as the resources allow


class SchedulerSpec(BaseModel):
    """Early stopping of trials: none, or ASHA on a metric reported every epoch."""

    model_config = _FROZEN
    name: Literal["none", "asha"] = "none"
    metric: str | None = None  # None: the objective metric
    mode: Literal["min", "max"] | None = None  # None: the metric's natural direction
    # In epochs, or in optimisation steps when training.steps sets a step budget (ASHA's time is
    # then the reported `step`). None: the whole budget.
    max_t: int | None = Field(None, gt=0)
    grace_period: int = Field(1, gt=0)  # epochs (steps with training.steps) a trial runs before it can be stopped
    reduction_factor: float = Field(2.0, gt=1.0)  # keep the best 1/reduction_factor at each rung


class ResourcesSpec(BaseModel):
    """What one trial holds: CPUs and GPUs (fractions allowed), split over its workers."""

    model_config = _FROZEN
    cpus_per_trial: float = Field(1.0, gt=0.0, le=1024)
    gpus_per_trial: float = Field(0.0, ge=0.0, le=64)
    num_workers: int = Field(1, gt=0, le=256)  # > 1: a TorchTrainer with DDP
    # auto: one worker trains inside the Tune trial (no ~16 s TorchTrainer start-up), more
    # workers get a TorchTrainer; torch_trainer: always a TorchTrainer.
    trainer: Literal["auto", "torch_trainer"] = "auto"
    # A trial that asked for a GPU on a node whose torch has no CUDA fails, unless this opts in
    # to training on the CPU (tests of GPU packing with logical GPUs do).
    cpu_fallback: bool = False

    @property
    def in_process(self) -> bool:
        """Whether a trial trains inside its Tune trial (one worker, no ``TorchTrainer``)."""
        return self.num_workers == 1 and self.trainer == "auto"


class EvaluationSpec(BaseModel):
    """Metrics computed once at the end of each trial, on held-out images."""

    model_config = _FROZEN
    metrics: list[str] = Field(default_factory=lambda: ["mig"])
    num_train: int = Field(10_000, gt=1, le=10_000_000)  # samples scored (disentanglement_lib's default)
    # Held-out samples of the metrics that score one: beta_vae and factor_vae (num_eval), dci,
    # sap and modularity_explicitness (num_test); disentanglement_lib's default.
    num_test: int = Field(5_000, ge=1, le=10_000_000)
    # Reconstructions of this many fixed val rows are kept with each checkpoint (snapshots.npz)
    # after the epochs listed (None: every epoch; the last epoch always) for the prediction grid.
    # Epochs count from 1, each listed once, none past the training budget (StudySpec checks it).
    snapshot_samples: int = Field(8, ge=0, le=256)
    snapshot_epochs: list[int] | None = None
    # The label column the probe metric reads off the latent means (jets: y); checked against the data.
    probe_label: str | None = Field(None, min_length=1, max_length=100)

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; expected any of {sorted(METRICS)}")
        return value

    @field_validator("snapshot_epochs")
    @classmethod
    def _epochs(cls, value: list[int] | None) -> list[int] | None:
        for i, epoch in enumerate(value or ()):
            if epoch < 1:
                raise ValueError(f"epochs count from 1: every entry must be >= 1, but got {epoch}")
            if epoch in value[:i]:
                raise ValueError(f"epoch {epoch} is listed twice")
        return value

    @model_validator(mode="after")
    def _probe(self) -> EvaluationSpec:
        if ("probe" in self.metrics) != (self.probe_label is not None):
            raise ValueError("evaluation.probe_label: the probe metric reads a label column (e.g. probe_label: y); "
                             "give both, or neither")
        return self


class StudySpec(BaseModel):
    """A whole study: data, model family, search space, objective, search, training, resources.

    ``dataset`` holds the dataset's validated options and each family's fixed config is validated
    once, here (:meth:`family_config`); trials derive theirs with :meth:`trial_settings`.
    """

    model_config = _FROZEN
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    # Where study directories go: a local path (~ expanded) or a URI (s3://bucket/prefix, gs://, ...).
    storage_path: str = "studies"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    dataset: SerializeAsAny[DatasetOptions]
    family: dict[str, Any]
    # Per-family fixed values when search_space.family searches over families.
    family_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Parameters (shared), and per family its own parameters when search_space.family searches families.
    search_space: dict[str, SearchEntry] = Field(default_factory=dict)
    objective: ObjectiveSpec = ObjectiveSpec()
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    training: TrainingSpec = TrainingSpec()
    resources: ResourcesSpec = ResourcesSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    _family_configs: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @field_validator("storage_path", mode="before")
    @classmethod
    def _storage_path(cls, value: Any) -> Any:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a local path or a URI such as s3://bucket/prefix (got {value!r})")
        if "\0" in value:
            raise ValueError("a NUL byte in the path")
        return value.rstrip("/") if is_uri(value) else os.path.expanduser(value)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> DatasetOptions:
        if isinstance(value, DatasetOptions):
            return value
        entry = _lookup(get_dataset, value, "dataset")
        _validate_section(entry.options_cls, value, "dataset")
        return entry.options_cls(**value)

    @field_serializer("dataset")
    def _dataset_as_given(self, options: DatasetOptions) -> dict[str, Any]:
        # The fields given, as given (an options class may refuse a default stated explicitly,
        # e.g. toy's centers for moons); reading it back gives the same options.
        return options.model_dump(mode="json", exclude_unset=True)

    @field_validator("family")
    @classmethod
    def _family(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "name" in value:  # without a name the family is searched: checked with the search space
            family = _lookup(get_family, value, "family")
            _validate_section(family.config_cls, {k: v for k, v in value.items() if k != "name"}, "family")
        return value

    @classmethod
    def load(cls, study: StudyDir) -> StudySpec:
        """The spec a study ran with (its ``spec.json``), read through today's model: a field added
        since takes its default (which keeps the behaviour the study ran with).

        Raises:
            FileNotFoundError: If the study has no ``spec.json`` (not a vae-study study).
            analysis.results.StudyFileError: If the file is corrupt or not a study spec.
            SpecError: If it is a study spec that today's model refuses (a field removed since).
        """
        saved = _read_saved(study)
        try:
            return cls.model_validate(saved)
        except ValidationError as err:
            raise SpecError(one_line(f"{study.uri(SPEC_FILE)}: a study spec today's vae-study refuses "
                                     f"({format_error(err)})")) from None

    def differences(self, study: StudyDir) -> list[str]:
        """The dotted fields in which the spec saved in ``study`` differs from this one (each read
        through today's model; a field today's model no longer knows differs).

        Raises:
            FileNotFoundError: If the study has no ``spec.json``.
            analysis.results.StudyFileError: If it is corrupt or not a study spec.
        """
        saved = _read_saved(study)
        try:
            saved = json.loads(type(self).model_validate(saved).model_dump_json())
        except ValidationError:  # compared as written: the unknown or changed fields differ
            pass
        old, new = _flatten(saved), _flatten(json.loads(self.model_dump_json()))
        return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))

    def family_config(self, name: str) -> BaseModel:
        """The validated fixed config of family ``name`` (``family`` plus its ``family_settings``)."""
        return self._family_configs[name]

    @property
    def study_location(self) -> str:
        """``storage_path/name``: an absolute local path or a URI."""
        if is_uri(self.storage_path):
            return f"{self.storage_path}/{self.name}"
        return os.path.realpath(os.path.join(self.storage_path, self.name))  # no error on a symlink loop

    def info(self) -> StudyInfo:
        """What the analysis needs to know of this study, stored with its tables."""
        return StudyInfo(
            name=self.name, seed=self.seed, dataset=self.dataset.model_dump(mode="json", exclude_unset=True),
            families=self.family_names,
            family={k: v for k, v in self.family.items() if k != "name"}, searched_params=self.searched_params,
            search_params=[entry.key for entry in self.entries],
            objective=ObjectiveInfo(metric=self.objective.metrics, mode=self.objective.modes),
            evaluation=EvaluationInfo(metrics=list(self.evaluation.metrics), num_train=self.evaluation.num_train,
                                      num_test=self.evaluation.num_test),
        )

    @property
    def family_names(self) -> list[str]:
        """The families the study trains: ``family.name``, or the choices of ``search_space.family``."""
        param = self.search_space.get(FAMILY_KEY)
        if param is None:
            return [self.family["name"]]
        return list(param.choices) if isinstance(param, CategoricalParam) else [param.value]

    @property
    def entries(self) -> list[SpaceEntry]:
        """The flattened search space: shared parameters, then each family's own
        (:func:`study.params.space_entries`)."""
        return space_entries(self.search_space)

    def family_fixed(self, name: str) -> dict[str, Any]:
        """The fixed config values of family ``name``: the ``family`` section plus its ``family_settings``."""
        return {**{k: v for k, v in self.family.items() if k != "name"}, **self.family_settings.get(name, {})}

    def _check_families(self) -> list:
        param = self.search_space.get(FAMILY_KEY)
        if isinstance(param, FamilySpace):
            raise ValueError("search_space.family: expected a categorical of family names, not a mapping")
        own = [key for key, value in self.search_space.items() if isinstance(value, FamilySpace)]
        if own and param is None:
            raise ValueError(f"search_space.{own[0]}: a family's own parameters need the families searched "
                             "(search_space.family: {type: categorical, choices: [...]})")
        if param is None:
            if "name" not in self.family:
                raise ValueError("family.name: required (or search the family with search_space.family)")
            if self.family_settings:
                raise ValueError("family_settings: only for a study that searches search_space.family; "
                                 "put the values in the family section")
            families = [get_family(self.family["name"])]
            self._validate_families(families)
            return families
        if "name" in self.family:
            raise ValueError("family.name: the family is searched in search_space.family; remove one of them")
        if not isinstance(param, (CategoricalParam, FixedParam)):
            raise ValueError(f"search_space.family: expected a categorical of family names, not a {param.type} range")
        families = []
        for name in self.family_names:
            try:
                families.append(get_family(name))
            except KeyError as err:
                raise ValueError(f"search_space.family: {err.args[0]}") from None
        for name in self.family_settings:
            if name not in self.family_names:
                raise ValueError(f"family_settings.{name}: not among the searched families {self.family_names}")
        for name in own:
            if name not in self.family_names:
                raise ValueError(f"search_space.{name}: its own parameters, but {name!r} is not among the searched "
                                 f"families {self.family_names}")
        for family in families:
            try:
                _validate_section(family.config_cls, self.family, "family")
            except ValueError as err:  # a common field every searched family must take
                raise ValueError(f"{err} (in family {family.name!r})") from None
            _validate_section(family.config_cls, self.family_fixed(family.name), f"family_settings.{family.name}")
        self._validate_families(families)
        return families

    def _validate_families(self, families: list) -> None:
        """Validates each family's fixed config once and keeps it (:meth:`family_config`)."""
        for family in families:
            self._family_configs[family.name] = family.config_cls(**self.family_fixed(family.name))

    @model_validator(mode="after")
    def _cross_checks(self) -> StudySpec:
        families = self._check_families()
        self._check_entries(families)
        if not self.searched_params:
            raise ValueError(
                "search_space: nothing to search; give at least one float, int or categorical parameter "
                "(a categorical with one choice runs one configuration)"
            )
        if self.search.algorithm == "grid" and self.search.num_samples is not None:
            if self.search.num_samples > self.grid_size:
                raise ValueError(
                    f"search.num_samples: grid search has {self.grid_size} configurations, "
                    f"but got num_samples={self.search.num_samples}"
                )
        if self.search.algorithm != "grid" and self.search.num_samples is None:
            raise ValueError(f"search.num_samples: required for algorithm {self.search.algorithm!r}")
        epoch_metrics: list[str] = []
        for family in families:
            names = family.reported_metrics(self.family_config(family.name))
            epoch_metrics = [m for m in epoch_metrics if m in names] if epoch_metrics else list(names)
        epoch_metrics += [m for m in self.dataset.extra_metrics() if m not in epoch_metrics]
        who = f"family {families[0].name!r}" if len(families) == 1 else f"every family of {self.family_names}"
        reported = set(epoch_metrics) | self._check_evaluation(families)
        for metric in self.objective.metrics:
            if metric not in reported:
                raise ValueError(
                    f"objective.metric: {metric!r} is not reported by {who} with "
                    f"evaluation.metrics {self.evaluation.metrics}; expected one of {sorted(reported)}"
                )
        if self.scheduler.name == "asha":
            self._check_asha(epoch_metrics)
        self._check_training(families)
        return self

    def _check_training(self, families: list) -> None:
        """The training settings against the resources: DDP needs the loop's own optimisation step,
        and fp16 a GPU (:data:`trainables.precision.FP16_ON_CPU`; a trial that asks for a GPU and
        falls back to the CPU meets the same refusal when it starts)."""
        for each in families:
            if self.resources.num_workers > 1 and supports(each.model_cls, "training_step"):
                raise ValueError(
                    f"resources.num_workers: family {each.name!r} runs its own optimisation step, which DDP "
                    f"cannot synchronise; use num_workers: 1 (got {self.resources.num_workers})"
                )
        searched = self.search_space.get("precision")
        where, values = ("search_space.precision", searched.values_to_check()) if searched is not None \
            else ("training.precision", [self.training.precision])
        if self.resources.gpus_per_trial == 0 and "fp16" in values:
            raise ValueError(f"{where}: the trials train on the CPU (resources.gpus_per_trial: 0), but {FP16_ON_CPU}")

    def _check_evaluation(self, families: list) -> set[str]:
        """Checks that every family can produce each requested metric; returns the result keys a trial
        reports (a study-level metric such as udr is computed after the trials: no objective)."""
        for name in self.evaluation.metrics:
            for family in families:
                # Whether the family can produce it at all; whether the data has factors is checked
                # against the loaded data (check_data), still before Ray starts.
                reason = metric_requirement(name, has_factors=True, model_cls=family.model_cls)
                if reason is not None:
                    raise ValueError(f"evaluation.metrics: {reason} (family {family.name!r})")
        after_trials = [m for m in self.evaluation.metrics if METRICS[m].kind == "study"]
        if after_trials and self.search.repeats < 2:
            raise ValueError(f"evaluation.metrics: {after_trials[0]} compares the seeds of a configuration; it needs "
                             f"search.repeats >= 2 (got {self.search.repeats})")
        return set(metric_key_modes([m for m in self.evaluation.metrics if m not in after_trials]))

    def _check_entries(self, families: list) -> None:
        """Checks every search-space entry against the families it applies to (or the training settings)."""
        keys = {e.key for e in self.entries}
        for entry in self.entries:
            if entry.key == FAMILY_KEY:
                continue
            if entry.family is not None and entry.field in keys:
                raise ValueError(f"search_space.{entry.key}: {entry.field} is also searched for every family; "
                                 "keep one")
            if entry.family is not None and entry.field.startswith(DATASET_PREFIX):
                raise ValueError(f"search_space.{entry.key}: a dataset option is searched for every family, not "
                                 "per family; move it to the top of search_space")
            applies = [f for f in families if entry.applies(f.name)]
            for family in applies:
                self._check_param(entry, family, self.family_fixed(family.name), len(applies) > 1)

    def _check_param(self, entry: SpaceEntry, family, fixed: dict[str, Any], several: bool) -> None:
        """Checks one search-space entry against one family's config (or the training settings)."""
        key, param, where = entry.field, entry.param, f"search_space.{entry.key}"
        head = key.split(".")[0]
        if key.startswith(DATASET_PREFIX):
            self._check_dataset_param(key, param)
        elif "." in key and head in family.config_cls.model_fields:
            if head not in fixed:
                raise ValueError(f"{where}: family.{head} must be given for its entry {key!r} to be searched")
            for value in param.values_to_check():
                try:
                    nested = set_path(fixed, key, value)
                except KeyError as err:
                    raise ValueError(f"{where}: {err.args[0]}") from None
                _validate_section(family.config_cls, nested, where)
        elif key in family.config_cls.model_fields:
            if key in fixed:
                raise ValueError(f"{where}: {key} is both fixed in family and searched; keep one")
            for value in param.values_to_check():
                _validate_section(family.config_cls, {**fixed, key: value}, where, only=key)
        elif key in TrainingSpec.model_fields:
            for value in param.values_to_check():
                _validate_section(TrainingSpec, {key: value}, where, only=key)
        else:
            which = f"every searched family, but {family.name!r} has none" if several else family.name
            raise ValueError(
                f"{where}: unknown parameter; expected one of {which} "
                f"({', '.join(sorted(family.config_cls.model_fields))}) or training "
                f"({', '.join(TrainingSpec.model_fields)})"
            )
        if self.search.algorithm == "grid" and not isinstance(param, (CategoricalParam, FixedParam)):
            raise ValueError(f"{where}: grid search takes categorical choices or a fixed value, not a {param.type} range")

    def _check_dataset_param(self, key: str, param) -> None:
        """A searched dataset option: one the dataset declares searchable, each value valid."""
        where = f"search_space.{key}"
        field = key[len(DATASET_PREFIX):]
        options = self.dataset
        if field not in options.searchable:
            raise ValueError(f"{where}: dataset {options.name!r} cannot search {field!r} per trial; "
                             f"searchable: {sorted(options.searchable) or 'none'}")
        if field in options.model_fields_set:
            raise ValueError(f"{where}: dataset.{field} is both fixed in dataset and searched; keep one")
        for value in param.values_to_check():
            _validate_section(type(options), {**options.model_dump(exclude_unset=True), field: value}, where,
                              only=field)

    def check_data(self, data: DataDescription) -> None:
        """Checks every family's configs against the loaded data and the training spec, and every
        requested metric against the data, before Ray starts.

        Each family's ``check_setup(config, training, data)`` runs for the fixed config with each
        searched value in turn (the others at their first value); every ``evaluation.metrics``
        entry must be computable on this data (a metric that scores codes against factors needs a
        factor that varies in the held-out rows); a searched ``dataset.train_fraction`` must keep
        at least one train row at each of its values (every choice, a range's low bound).

        Raises:
            ValueError: One line naming the field.
        """
        for name in self.evaluation.metrics:
            for family_name in self.family_names:
                reason = metric_requirement(name, has_factors=data.has_factors, varying_factors=data.varying_factors,
                                            model_cls=get_family(family_name).model_cls)
                if reason is not None:
                    raise ValueError(f"evaluation.metrics: {reason} (dataset {self.dataset.name!r})")
        label = self.evaluation.probe_label
        if label is not None and label not in data.classes:
            raise ValueError(f"evaluation.probe_label: {label!r} is not a label column of dataset "
                             f"{self.dataset.name!r}; expected one of {sorted(data.classes)}")
        self._check_train_fraction(data.num_train)
        for chosen in self._trials_to_check():
            family = get_family(self.trial_family(chosen))
            if not supports(family.model_cls, "check_setup"):
                continue
            config, training = self.trial_settings(chosen)
            try:
                family.model_cls.check_setup(config, training, data)
            except ValueError as err:
                varied = {k: v for k, v in chosen.items() if k in self.searched_params}
                suffix = f" (in family {family.name!r}" + (f", with {varied})" if varied else ")")
                raise ValueError(f"{err}{suffix}") from None

    def _trials_to_check(self) -> list[dict[str, Any]]:
        """Per family, a trial with every parameter at its first value, and one per other value of
        each parameter (the rest at their first)."""
        searched_family = FAMILY_KEY in self.search_space
        trials = []
        for name in self.family_names if searched_family else [None]:
            entries = [e for e in self.entries if e.key != FAMILY_KEY and e.applies(name)]
            first = {e.key: e.param.values_to_check()[0] for e in entries}
            if searched_family:
                first[FAMILY_KEY] = name
            trials += [first] + [{**first, e.key: v} for e in entries for v in e.param.values_to_check()[1:]]
        return trials

    def _check_train_fraction(self, num_train: int) -> None:
        """A searched ``dataset.train_fraction`` keeps a train row at every choice (a range: its low
        bound, the smallest value sampled), by the rule the trials apply (``fraction_rows``)."""
        key = f"{DATASET_PREFIX}train_fraction"
        param = self.search_space.get(key)
        if param is None:
            return
        values = param.values_to_check()
        for value in values[:1] if isinstance(param, RangeParam) else values:
            if fraction_rows(float(value), num_train) < 1:
                raise ValueError(f"search_space.{key}: {value} of {num_train} train rows keeps none (a trial would "
                                 f"train on one row); choose fractions of at least {1 / num_train:.3g}")

    @model_validator(mode="after")
    def _check_snapshot_epochs(self) -> StudySpec:
        """No snapshot epoch past the most epochs a trial can train: ``training.epochs`` (the largest
        searched value), or with a step budget ``training.steps`` (each epoch takes at least one step;
        how many epochs a trial runs then depends on its rows and batch size)."""
        if self.training.steps is not None or "steps" in self.search_space:
            unit, fixed = "steps", self.training.steps
        else:
            unit, fixed = "epochs", self.training.epochs
        searched = self.search_space.get(unit)
        values = [fixed, *(searched.values_to_check() if searched else ())]
        budget = max(int(v) for v in values if v is not None)
        beyond = [epoch for epoch in self.evaluation.snapshot_epochs or () if epoch > budget]
        if beyond:
            raise ValueError(f"evaluation.snapshot_epochs: epoch {beyond[0]} is past the training budget "
                             f"(training.{unit}={budget}); list epochs 1 to {budget}")
        return self

    def _check_asha(self, epoch_metrics: tuple[str, ...]) -> None:
        if self.objective.multi:
            raise ValueError(
                "scheduler.name: ASHA stops trials on one metric and cannot serve a multi-objective "
                "study; use scheduler.name: none"
            )
        metric = self.scheduler.metric or self.objective.metrics[0]
        if metric not in epoch_metrics:
            raise ValueError(
                f"scheduler.metric: ASHA compares trials every epoch, but {metric!r} is not reported "
                f"every epoch; expected one of {list(epoch_metrics)}"
            )
        budget, unit = (self.training.steps, "steps") if self.training.steps else (self.training.epochs, "epochs")
        if self.scheduler.max_t is not None and self.scheduler.max_t > budget:
            raise ValueError(f"scheduler.max_t: must be <= training.{unit}={budget}, but got {self.scheduler.max_t}")
        if self.scheduler.grace_period > (self.scheduler.max_t or budget):
            raise ValueError(
                f"scheduler.grace_period: must be <= max_t, but got {self.scheduler.grace_period}"
            )

    @property
    def grid_size(self) -> int:
        """Number of configurations in the grid of categorical choices (summed over families that
        have their own parameters)."""
        return grid_size(self.entries, self.family_names)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every configuration of the grid (:func:`study.params.grid_points`)."""
        return grid_points(self.entries, self.family_names)

    @property
    def conditional(self) -> bool:
        """Whether some family has parameters of its own (sampled only for its trials)."""
        return any(entry.family is not None for entry in self.entries)

    @property
    def searched_params(self) -> list[str]:
        """Keys of the search-space parameters that vary (``family.field`` for a family's own)."""
        return [entry.key for entry in self.entries if entry.searched]

    def trial_family(self, params: dict[str, Any]) -> str:
        """The family name of a trial with sampled ``params``."""
        if FAMILY_KEY in self.search_space:
            return params[FAMILY_KEY] if FAMILY_KEY in params else self.family_names[0]
        return self.family["name"]

    def trial_settings(self, params: dict[str, Any]) -> tuple[BaseModel, TrainingSpec]:
        """The family config and training settings of a trial with sampled ``params``.

        Args:
            params: Search-space values of one trial (keys of :attr:`entries`; fixed ones may be absent).

        Returns:
            ``(family_config, training)``, both validated.
        """
        family = get_family(self.trial_family(params))
        fam = self.family_config(family.name).model_dump(exclude_unset=True)
        train = self.training.model_dump()
        for entry in self.entries:
            if entry.key == FAMILY_KEY or entry.field.startswith(DATASET_PREFIX) or not entry.applies(family.name):
                continue
            value = params[entry.key] if entry.key in params else entry.param.value
            if "." in entry.field:
                fam = set_path(fam, entry.field, value)
            else:
                (fam if entry.field in family.config_cls.model_fields else train)[entry.field] = value
        return family.config_cls(**fam), TrainingSpec(**train)


def _read_saved(study: StudyDir) -> dict[str, Any]:
    """``spec.json`` of a study as JSON values: a mapping with a name and a dataset section.

    Raises:
        FileNotFoundError: If there is none (not a vae-study study).
        analysis.results.StudyFileError: If it is corrupt or not a study spec.
    """
    if not study.is_file(SPEC_FILE):
        raise FileNotFoundError(f"{study}: no {SPEC_FILE}; not a vae-study study directory")
    saved = study.read_json(SPEC_FILE)
    if not isinstance(saved, dict) or not isinstance(saved.get("dataset"), dict) or "name" not in saved:
        raise StudyFileError(f"{study.uri(SPEC_FILE)}: not a study spec (expected a mapping with name and dataset)")
    return saved


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def set_path(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``config`` with the nested entry at dotted ``key`` (``"tasks.y.weight"``) set.

    Raises:
        KeyError: If an intermediate entry is missing or not a mapping.
    """
    result = copy.deepcopy(config)
    node = result
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise KeyError(f"{'.'.join(parts[: depth + 1])!r} is not a mapping in the family config")
        node = node[part]
    node[parts[-1]] = value
    return result


def _lookup(getter, section: Any, where: str):
    if not isinstance(section, dict) or "name" not in section:
        raise ValueError(f"{where}.name: required")
    try:
        return getter(section["name"])
    except KeyError as err:
        raise ValueError(f"{where}.name: {err.args[0]}") from None


def _validate_section(model_cls: type[BaseModel], data: dict[str, Any], where: str, only: str | None = None) -> None:
    """Validates ``data`` with ``model_cls``, re-raising the first error as ``where.field: msg``."""
    try:
        model_cls(**data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = shorten(".".join(str(p) for p in first["loc"]))
        field = where if only is not None else f"{where}.{loc}" if loc else where
        raise ValueError(f"{field}: {_describe(first, model_cls)}") from None


def _describe(error: dict[str, Any], model_cls: type[BaseModel] | None = None) -> str:
    """One pydantic error as 'what was expected (got value)'."""
    if error["type"] == "extra_forbidden":
        known = _fields_at(model_cls, error["loc"][:-1]) if model_cls else None
        hint = f"; expected one of: {', '.join(known)}" if known else ""
        return f"unknown key {shorten(repr(error['loc'][-1]))}{hint}"
    if error["type"] == "missing":
        return "required"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{msg} (got {shorten(repr(error['input']))})"


def _fields_at(model_cls: type[BaseModel], loc: tuple) -> list[str] | None:
    """Field names of the model reached by following ``loc`` from ``model_cls``."""
    current: Any = model_cls
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def format_error(err: ValidationError) -> str:
    """The first error of a spec validation as one line: ``field: expected (got value)``."""
    first = err.errors()[0]
    parts = list(first["loc"])
    if parts[:1] == ["search_space"] and len(parts) > 2 and parts[2] in ("param", "family"):
        del parts[2]  # the tag of a search-space entry (a parameter, or a family's own parameters)
    loc = shorten(".".join(str(p) for p in parts))
    if first["type"] == "value_error" and not loc:
        return first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":
        msg = first["msg"].removeprefix("Value error, ")
        return msg if msg.split(":", 1)[0].startswith(loc.split(".")[0]) else f"{loc}: {msg}"
    if first["type"] == "union_tag_invalid" or first["type"] == "union_tag_not_found":
        return f"{loc}: type must be one of float, int, categorical, fixed (got {first['input'].get('type')!r})" \
            if isinstance(first["input"], dict) else f"{loc}: expected a mapping with a type (got {first['input']!r})"
    return f"{loc}: {_describe(first, StudySpec)}"


MAX_NUMBER_DIGITS = 400  # more than any float's range needs (1.8e308), far fewer than Python's 4,300 limit


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``: no alias bombs, no shared nodes) and
    duplicate mapping keys (a repeated key would silently win over the first)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a study spec",
                                              event.start_mark)
        return super().compose_node(parent, index)

    def construct_number(self, node):
        """An int or float scalar of at most :data:`MAX_NUMBER_DIGITS` characters."""
        if len(node.value) > MAX_NUMBER_DIGITS:
            raise yaml.constructor.ConstructorError(None, None, f"a number of {len(node.value)} characters; numbers "
                                                    f"have at most {MAX_NUMBER_DIGITS} digits", node.start_mark)
        if node.tag.endswith(":int"):
            return yaml.SafeLoader.construct_yaml_int(self, node)
        return yaml.SafeLoader.construct_yaml_float(self, node)

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_number)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_number)


def safe_yaml(text: str) -> Any:
    """Parses YAML with safe types only, refusing aliases, duplicate keys and numbers beyond a float.

    Raises:
        yaml.YAMLError: On malformed YAML, an alias, a duplicate key (with its line) or a number
            of more than :data:`MAX_NUMBER_DIGITS` digits (no spec field takes one; Python refuses
            to convert them, and a float cannot hold them).
    """
    loader = _StrictLoader(text)  # a SafeLoader: plain YAML types only, never a Python object
    try:
        return loader.get_single_data()
    except (ValueError, OverflowError) as err:  # int(...) of a huge literal, inside the constructor
        raise yaml.YAMLError(f"a number too large ({shorten(str(err), 80)}); numbers have at most "
                             f"{MAX_NUMBER_DIGITS} digits") from None
    finally:
        loader.dispose()


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``--set a.b.c=value`` overrides to a spec mapping (values parsed as YAML).

    Raises:
        SpecError: If an override has no ``=``, an empty key, or walks through a non-mapping.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise SpecError(f"--set {shorten(item, 80)}: expected KEY=VALUE with a dotted key, e.g. training.epochs=1")
        try:
            value = safe_yaml(raw) if raw else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err)
            raise SpecError(f"--set {shorten(item, 80)}: the value is not valid YAML ({shorten(problem, 120)})") from None
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node.setdefault(part, {}) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                raise SpecError(f"--set {shorten(item, 80)}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_spec(path: str | Path, overrides: list[str] = ()) -> StudySpec:
    """Reads, overrides and validates a study spec.

    Args:
        path: YAML file.
        overrides: ``KEY=VALUE`` strings (``training.epochs=1``).

    Returns:
        The validated spec.

    Raises:
        SpecError: One line naming the file and the field: unreadable file, malformed
            YAML, a top level that is not a mapping, or any invalid field.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: {path.stat().st_size} bytes; a study spec is at most {MAX_SPEC_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{path}: cannot read the study spec ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}); expected a YAML study spec") from None
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or getattr(err, "reason", None) or str(err)
        raise SpecError(one_line(f"{path}: not valid YAML{where}: {problem}")) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of study sections at the top level, got {type(data).__name__}")
    if any(not isinstance(key, str) for key in data):
        raise SpecError(f"{path}: section names must be strings, got {[k for k in data if not isinstance(k, str)][0]!r}")
    data = apply_overrides(data, list(overrides))
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(one_line(f"{path}: {format_error(err)}")) from None
