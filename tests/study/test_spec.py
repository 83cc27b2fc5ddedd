"""The study spec: YAML -> StudySpec, one-line SpecErrors naming file and field, --set overrides.

Each bad spec is the smoke spec with one thing changed, so the error can only come from that change.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from datasets.dsprites import DSpritesOptions
from study.spec import (
    CategoricalParam,
    SpecError,
    StudySpec,
    TrainingSpec,
    apply_overrides,
    load_spec,
)
from trainables.families.conv_vae import ConvVAEConfig

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    """The smoke spec as a mapping; tests take a deep copy before changing it."""
    return yaml.safe_load(SMOKE.read_text())


def write_spec(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def load_error(path: Path, overrides: list[str] = ()) -> str:
    """The message of the SpecError that ``load_spec`` raises, checked to be one line."""
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    msg = str(info.value)
    assert msg, "SpecError with an empty message"
    assert "\n" not in msg, f"SpecError message spans lines: {msg!r}"
    return msg


# --- a valid spec ---------------------------------------------------------------------------


def test_smoke_spec_loads_with_its_values():
    spec = load_spec(SMOKE)

    assert spec.name == "smoke"
    assert spec.storage_path == "studies"
    assert spec.study_location == str((Path("studies") / "smoke").resolve())
    assert spec.seed == 0
    assert spec.dataset.model_dump(exclude_unset=True) == {"name": "dsprites", "val_fraction": 0.2, "limit": 3000}
    assert spec.family == {"name": "conv_vae", "latent_dim": 4, "filters": [8, 8, 16, 16], "hidden_dim": 32}
    assert list(spec.search_space) == ["beta"]
    beta = spec.search_space["beta"]
    assert isinstance(beta, CategoricalParam) and beta.choices == [1, 4]
    assert spec.searched_params == ["beta"]
    assert spec.grid_size == 2
    assert (spec.objective.metric, spec.objective.mode, spec.objective.multi) == ("mig", "max", False)
    assert (spec.search.algorithm, spec.search.repeats, spec.search.num_samples) == ("grid", 1, None)
    assert spec.scheduler.name == "none"
    assert (spec.training.epochs, spec.training.batch_size) == (1, 64)
    assert spec.training.lr == 1e-3  # the default, not in the file
    assert spec.resources.cpus_per_trial == 1.0
    assert (spec.evaluation.metrics, spec.evaluation.num_train) == (["mig"], 500)


def test_smoke_spec_dataset_options():
    options = load_spec(SMOKE).dataset

    assert isinstance(options, DSpritesOptions)
    assert (options.path, options.val_fraction, options.limit) == (None, 0.2, 3000)


def test_trial_settings_put_searched_beta_into_the_family_config():
    family, training = load_spec(SMOKE).trial_settings({"beta": 4})

    assert isinstance(family, ConvVAEConfig)
    assert family.beta == 4.0
    assert (family.latent_dim, family.filters, family.hidden_dim) == (4, (8, 8, 16, 16), 32)
    assert isinstance(training, TrainingSpec)
    assert (training.epochs, training.batch_size, training.lr) == (1, 64, 1e-3)


def test_trial_settings_put_searched_lr_into_training(tmp_path, base):
    data = copy.deepcopy(base)
    data["family"]["beta"] = 2
    data["search_space"] = {"lr": {"type": "categorical", "choices": [1e-3, 1e-2]}}
    family, training = load_spec(write_spec(tmp_path, data)).trial_settings({"lr": 1e-2})

    assert family.beta == 2.0
    assert training.lr == 1e-2


def test_storage_path_expands_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = load_spec(SMOKE, ["storage_path=~/studies"])
    assert spec.storage_path == str(tmp_path / "studies")
    assert spec.study_location == str((tmp_path / "studies" / "smoke").resolve())


def test_spec_round_trips_through_json():
    spec = load_spec(SMOKE)

    assert StudySpec.model_validate_json(spec.model_dump_json()) == spec


def test_written_copy_of_smoke_loads_the_same(tmp_path, base):
    assert load_spec(write_spec(tmp_path, copy.deepcopy(base))) == load_spec(SMOKE)


# --- bad specs --------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(section: str | None, **values: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        (data if section is None else data[section]).update(values)

    return mutate


def _search(entry: Any, *, key: str = "beta", algorithm: str | None = None, num_samples: int | None = None) -> Mutation:
    """Replaces the search space by ``{key: entry}`` (and optionally the search algorithm)."""

    def mutate(data: dict[str, Any]) -> None:
        data["search_space"] = {key: entry}
        if algorithm is not None:
            data["search"] = {"algorithm": algorithm, "num_samples": num_samples}

    return mutate


def _fix_beta_search_lr(beta: Any) -> Mutation:
    """beta fixed in family (so it is checked there), lr searched instead."""

    def mutate(data: dict[str, Any]) -> None:
        data["family"]["beta"] = beta
        data["search_space"] = {"lr": {"type": "categorical", "choices": [1e-3]}}

    return mutate


_CONV_VAE_KEYS = ", ".join(sorted(ConvVAEConfig.model_fields))

# (mutation of the smoke mapping, fragments the one-line message must contain)
BAD_SPECS = [
    pytest.param(_set(None, foo=1), ["foo: unknown key 'foo'", "expected one of: dataset, evaluation, family"],
                 id="unknown-top-level-key"),
    pytest.param(_set("training", epoch=1), ["training.epoch: unknown key 'epoch'", "epochs"],
                 id="unknown-key-in-training"),
    pytest.param(_set("objective", direction="max"),
                 ["objective.direction: unknown key", "expected one of: metric, mode"], id="unknown-key-in-objective"),
    pytest.param(_set("family", latnt_dim=3),
                 ["family.latnt_dim: unknown key 'latnt_dim'", f"expected one of: {_CONV_VAE_KEYS}"],
                 id="misspelt-family-key"),
    pytest.param(_set("dataset", foo=1), ["dataset.foo: unknown key 'foo'", "val_fraction"],
                 id="unknown-key-in-dataset"),
    pytest.param(_fix_beta_search_lr(-1), ["family.beta:", "greater than or equal to 0", "(got -1)"],
                 id="negative-beta-in-family"),
    pytest.param(_set("family", latent_dim=0), ["family.latent_dim:", "greater than 0", "(got 0)"],
                 id="latent-dim-0"),
    pytest.param(_set("family", filters=[]), ["family.filters:", "at least 1 item"], id="no-filters"),
    pytest.param(_set("dataset", val_fraction=1.0), ["dataset.val_fraction:", "less than 1", "(got 1.0)"],
                 id="val-fraction-1"),
    pytest.param(_set("training", lr=0), ["training.lr:", "greater than 0", "(got 0)"], id="lr-0"),
    pytest.param(_set("resources", cpus_per_trial=-1), ["resources.cpus_per_trial:", "greater than 0", "(got -1)"],
                 id="negative-cpus"),
    pytest.param(_set(None, seed=-1), ["seed:", "greater than or equal to 0"], id="negative-seed"),
    pytest.param(_set(None, name="two words"), ["name:", "should match pattern", "'two words'"], id="bad-name"),
    pytest.param(_search({"type": "float", "low": 5, "high": 1}, algorithm="tpe", num_samples=4),
                 ["search_space.beta", "`low < high` must hold, but got (low=5.0, high=1.0)"],
                 id="float-low-above-high"),
    pytest.param(_search({"type": "float", "low": 0, "high": 1, "log": True}, algorithm="tpe", num_samples=4),
                 ["search_space.beta", "a log range needs `low > 0`, but got low=0.0"], id="log-range-from-0"),
    pytest.param(_search({"type": "int", "low": 3, "high": 3}, key="latent_dim", algorithm="tpe", num_samples=4),
                 ["search_space.latent_dim", "(low=3, high=3)"], id="int-empty-range"),
    pytest.param(_search({"type": "categorical", "choices": [1, -2]}),
                 ["search_space.beta:", "greater than or equal to 0", "(got -2)"], id="searched-beta-negative"),
    pytest.param(_search({"type": "categorical", "choices": [1e-3, 0]}, key="lr"),
                 ["search_space.lr:", "greater than 0", "(got 0)"], id="searched-lr-0"),
    pytest.param(_search({"type": "categorical", "choices": [1]}, key="gamma"),
                 ["search_space.gamma: unknown parameter", "conv_vae", "latent_dim", "epochs"],
                 id="unknown-search-parameter"),
    pytest.param(_search({"type": "choice", "choices": [1, 4]}),
                 ["search_space.beta: type must be one of float, int, categorical, fixed (got 'choice')"],
                 id="bad-search-type"),
    pytest.param(_search({"choices": [1, 4]}), ["search_space.beta: type must be one of"], id="missing-search-type"),
    pytest.param(_search({"type": "fixed", "value": 2}), ["search_space: nothing to search"], id="nothing-searched"),
    pytest.param(_search({"type": "float", "low": 1, "high": 4}),
                 ["search_space.beta: grid search takes categorical choices or a fixed value, not a float range"],
                 id="grid-with-float-range"),
    pytest.param(_set("search", num_samples=3),
                 ["search.num_samples: grid search has 2 configurations, but got num_samples=3"],
                 id="grid-num-samples-above-grid"),
    pytest.param(_set("search", algorithm="tpe"), ["search.num_samples: required for algorithm 'tpe'"],
                 id="tpe-without-num-samples"),
    pytest.param(_set("search", algorithm="bayes"), ["search.algorithm:", "'tpe'", "'bayes'"], id="unknown-algorithm"),
    pytest.param(_set("objective", metric="val_accuracy"),
                 ["objective.metric: 'val_accuracy' is not reported by family 'conv_vae'", "val_elbo"],
                 id="objective-metric-not-reported"),
    pytest.param(_set("objective", mode="maximize"), ["objective.mode"], id="bad-objective-mode"),
    pytest.param(_set(None, objective={"metric": ["mig", "val_elbo"], "mode": ["max"]}),
                 ["objective: multi-objective needs >= 2 metrics and one mode each", "mode=['max']"],
                 id="metric-mode-lengths-differ"),
    pytest.param(_set(None, objective={"metric": ["mig", "val_elbo"], "mode": "max"}),
                 ["objective.metric and objective.mode must both be single values or both lists"],
                 id="metric-list-mode-single"),
    pytest.param(_set(None, objective={"metric": ["mig", "val_elbo"], "mode": ["max", "max"]},
                      scheduler={"name": "asha"}),
                 ["scheduler.name: ASHA", "multi-objective"], id="multi-objective-with-asha"),
    pytest.param(_set(None, scheduler={"name": "asha"}),
                 ["scheduler.metric: ASHA compares trials every epoch, but 'mig' is not reported every epoch",
                  "val_elbo"], id="asha-on-mig"),
    pytest.param(_set(None, objective={"metric": "val_elbo", "mode": "max"}, scheduler={"name": "asha", "max_t": 5}),
                 ["scheduler.max_t: must be <= training.epochs=1, but got 5"], id="asha-max-t-above-epochs"),
    pytest.param(_set("dataset", name="mnist"), ["dataset.name: unknown dataset 'mnist'", "'dsprites'"],
                 id="unknown-dataset"),
    pytest.param(_set("family", name="no_such_vae"), ["family.name: unknown family 'no_such_vae'", "'conv_vae'"],
                 id="unknown-family"),
    pytest.param(lambda data: data["family"].pop("name"), ["family.name: required"], id="family-without-name"),
    pytest.param(lambda data: data.pop("name"), ["name: required"], id="missing-name"),
    pytest.param(_set("evaluation", metrics=["mig", "spa"]), ["evaluation.metrics: unknown metric 'spa'", "'sap'"],
                 id="unknown-evaluation-metric"),
    pytest.param(_set("family", beta=2), ["search_space.beta: beta is both fixed in family and searched"],
                 id="fixed-and-searched"),
    pytest.param(_set("evaluation", metrics=["mig", "udr"]),
                 ["evaluation.metrics: udr compares the seeds of a configuration; it needs search.repeats >= 2 (got 1)"],
                 id="udr-with-one-seed"),
    pytest.param(_set(None, evaluation={"metrics": ["mig", "udr"]}, search={"algorithm": "grid", "repeats": 2},
                      objective={"metric": "udr", "mode": "max"}),
                 ["objective.metric: 'udr' is not reported", "'mig'"], id="udr-cannot-steer-the-search"),
    pytest.param(_set("evaluation", metrics=["mig", "probe"]), ["evaluation.probe_label:", "label column"],
                 id="probe-without-label"),
    pytest.param(_set("evaluation", probe_label="y"), ["evaluation.probe_label:", "give both, or neither"],
                 id="label-without-probe"),
    pytest.param(_set(None, training=[1]), ["training:", "valid dictionary"], id="training-not-a-mapping"),
    pytest.param(_set("training", precision="fp16"),
                 ["training.precision: the trials train on the CPU (resources.gpus_per_trial: 0)",
                  "fp16 trains on CUDA GPUs only", "use bf16"], id="fp16-on-the-cpu"),
    pytest.param(_search({"type": "categorical", "choices": ["fp32", "fp16"]}, key="precision"),
                 ["search_space.precision: the trials train on the CPU", "fp16 trains on CUDA GPUs only"],
                 id="fp16-searched-on-the-cpu"),
    pytest.param(_set("evaluation", snapshot_epochs=[-5, 1]), ["evaluation.snapshot_epochs:", ">= 1", "-5"],
                 id="snapshot-epoch-below-one"),
    pytest.param(_set("evaluation", snapshot_epochs=[1, 1_000_000]),
                 ["evaluation.snapshot_epochs:", "1000000", "training.epochs=1"], id="snapshot-epoch-beyond-training"),
    pytest.param(_set("evaluation", snapshot_epochs=[1, 1]), ["evaluation.snapshot_epochs:", "1", "twice"],
                 id="snapshot-epoch-listed-twice"),
    pytest.param(lambda data: (data["training"].update(steps=40), data["evaluation"].update(snapshot_epochs=[41])),
                 ["evaluation.snapshot_epochs:", "41", "training.steps=40"], id="snapshot-epoch-beyond-a-step-budget"),
]


def test_snapshot_epochs_up_to_the_largest_budget_are_accepted(tmp_path, base):
    data = copy.deepcopy(base)
    data["evaluation"]["snapshot_epochs"] = [1, 3, 5]
    data["search_space"]["epochs"] = {"type": "categorical", "choices": [1, 5]}  # a trial may run 5 epochs
    assert load_spec(write_spec(tmp_path, data)).evaluation.snapshot_epochs == [1, 3, 5]
    data = copy.deepcopy(base)
    data["training"]["steps"] = 40  # each epoch takes at least one step: no trial runs more than 40 epochs
    data["evaluation"]["snapshot_epochs"] = [40]
    assert load_spec(write_spec(tmp_path, data)).evaluation.snapshot_epochs == [40]


@pytest.mark.parametrize("mutate, fragments", BAD_SPECS)
def test_bad_spec_raises_one_line_naming_file_and_field(tmp_path, base, mutate, fragments):
    data = copy.deepcopy(base)
    mutate(data)
    path = write_spec(tmp_path, data)

    msg = load_error(path)

    assert msg.startswith(f"{path}: "), msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


@pytest.mark.parametrize(
    "text, fragments",
    [
        pytest.param("name: x\nfamily: [1, 2\n", ["not valid YAML at line 3, column 1", "expected ',' or ']'"],
                     id="unclosed-list"),
        pytest.param("name: x\n\tfamily: 1\n", ["not valid YAML at line 2, column 1", "'\\t'"], id="tab-indent"),
        pytest.param("- name: x\n- seed: 1\n", ["expected a mapping of study sections at the top level, got list"],
                     id="top-level-list"),
        pytest.param("", ["expected a mapping of study sections at the top level, got NoneType"], id="empty-file"),
        pytest.param("just a string\n", ["at the top level, got str"], id="top-level-scalar"),
    ],
)
def test_unparsable_spec_raises_one_line_naming_the_file(tmp_path, text, fragments):
    path = write_spec(tmp_path, text)

    msg = load_error(path)

    assert msg.startswith(f"{path}: "), msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_precision_is_auto_unless_set():
    assert load_spec(SMOKE).training.precision == "auto"
    assert load_spec(SMOKE, ["training.precision=fp32"]).training.precision == "fp32"
    assert "training.precision" in load_error(SMOKE, ["training.precision=fp64"])


def test_fp16_is_accepted_for_trials_on_a_gpu(tmp_path, base):
    data = copy.deepcopy(base)
    data["training"]["precision"] = "fp16"
    data["resources"]["gpus_per_trial"] = 1
    assert load_spec(write_spec(tmp_path, data)).training.precision == "fp16"


def test_missing_spec_file_names_it(tmp_path):
    path = tmp_path / "absent.yaml"

    msg = load_error(path)

    assert msg == f"{path}: cannot read the study spec (No such file or directory)"


def test_non_utf8_spec_raises_spec_error(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"name: caf\xe9\n")

    msg = load_error(path)

    assert msg.startswith(f"{path}: ")


def test_control_character_in_spec_gives_one_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"name: a\x00b\n")

    msg = load_error(path)

    assert msg.startswith(f"{path}: not valid YAML")


def test_unknown_key_with_newline_gives_one_line(tmp_path, base):
    data = copy.deepcopy(base)
    data["a\nb"] = 1
    path = write_spec(tmp_path, data)

    msg = load_error(path)

    assert "unknown key 'a\\nb'" in msg


# --- overrides --------------------------------------------------------------------------------


def test_overrides_set_nested_values_typed_as_yaml():
    data = {"training": {"epochs": 1}, "search_space": {"beta": {"type": "categorical", "choices": [1, 4]}}}

    overrides = ["training.epochs=3", "search_space.beta.choices=[1,2]", "name=run2", "training.lr=0.01"]
    out = apply_overrides(data, overrides)

    assert out is data
    assert out["training"] == {"epochs": 3, "lr": 0.01}
    assert type(out["training"]["epochs"]) is int
    assert out["search_space"]["beta"] == {"type": "categorical", "choices": [1, 2]}
    assert out["name"] == "run2"


def test_override_creates_missing_sections():
    assert apply_overrides({}, ["scheduler.name=asha"]) == {"scheduler": {"name": "asha"}}


def test_override_with_empty_value_sets_empty_string():
    assert apply_overrides({"name": "x"}, ["name="]) == {"name": ""}


def test_overrides_reach_the_loaded_spec():
    spec = load_spec(SMOKE, ["training.epochs=3", "search_space.beta.choices=[1,2,8]", "family.latent_dim=6"])

    assert spec.training.epochs == 3
    assert spec.search_space["beta"].choices == [1, 2, 8]
    assert spec.grid_size == 3
    assert spec.family["latent_dim"] == 6
    assert load_spec(SMOKE).training.epochs == 1  # the file is untouched


@pytest.mark.parametrize(
    "override, fragment",
    [
        pytest.param("training.epochs", "expected KEY=VALUE", id="no-equals"),
        pytest.param("=3", "expected KEY=VALUE", id="empty-key"),
        pytest.param("training..epochs=3", "expected KEY=VALUE", id="empty-key-part"),
        pytest.param("name.x=1", "name is not a section", id="through-a-scalar"),
        pytest.param("family.filters.0=4", "family.filters is not a section", id="through-a-list"),
        pytest.param("training.epochs=[1", "the value is not valid YAML", id="bad-yaml-value"),
    ],
)
def test_bad_override_raises_spec_error_naming_it(override, fragment):
    data = {"name": "smoke", "training": {"epochs": 1}, "family": {"filters": [8, 8]}}

    with pytest.raises(SpecError) as info:
        apply_overrides(data, [override])

    msg = str(info.value)
    assert msg.startswith(f"--set {override}: "), msg
    assert fragment in msg
    assert "\n" not in msg


def test_override_to_unknown_key_names_it():
    msg = load_error(SMOKE, ["training.epoch=1"])

    assert msg.startswith(f"{SMOKE}: training.epoch: unknown key 'epoch'"), msg


def test_override_to_out_of_range_value_names_the_field():
    msg = load_error(SMOKE, ["family.beta=-1", "search_space={lr: {type: categorical, choices: [0.001]}}"])

    assert msg.startswith(f"{SMOKE}: family.beta: "), msg
    assert "(got -1)" in msg


def test_override_through_a_scalar_via_load_spec():
    msg = load_error(SMOKE, ["name.x=1"])

    assert msg == "--set name.x=1: name is not a section"


# --- searching the family itself, dotted keys ------------------------------------------------


def family_search(base: dict[str, Any]) -> dict[str, Any]:
    """The smoke spec searching over two families: the conv VAE twice under different settings is not
    possible, so conv_vae against itself via a one-choice categorical, and the fields split."""
    data = copy.deepcopy(base)
    data["family"] = {"latent_dim": 4, "filters": [8, 8, 16, 16]}
    data["family_settings"] = {"conv_vae": {"hidden_dim": 32}}
    data["search_space"] = {"family": {"type": "categorical", "choices": ["conv_vae"]},
                            "beta": {"type": "categorical", "choices": [1, 4]}}
    return data


def test_a_searched_family_gets_common_and_own_settings(tmp_path, base):
    spec = load_spec(write_spec(tmp_path, family_search(base)))
    assert spec.family_names == ["conv_vae"]
    assert spec.searched_params == ["family", "beta"]
    assert spec.trial_family({"family": "conv_vae", "beta": 4}) == "conv_vae"
    config, _ = spec.trial_settings({"family": "conv_vae", "beta": 4})
    assert (config.latent_dim, config.hidden_dim, config.beta) == (4, 32, 4)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d["family"].update(name="conv_vae"), "family.name"),
        (lambda d: d["search_space"]["family"].update(choices=["conv_vae", "no_such_family"]), "search_space.family"),
        (lambda d: d["family_settings"].update(dcgan_typo={"latent_dim": 3}), "family_settings.dcgan_typo"),
        (lambda d: d["family_settings"]["conv_vae"].update(hiden_dim=3), "family_settings.conv_vae.hiden_dim"),
        (lambda d: d["search_space"].update(family={"type": "float", "low": 0, "high": 1}), "search_space.family"),
    ],
)
def test_bad_family_search_is_refused_naming_the_field(tmp_path, base, change, field):
    data = family_search(base)
    change(data)
    assert field in load_error(write_spec(tmp_path, data))


def test_family_settings_without_a_family_search_is_refused(tmp_path, base):
    data = copy.deepcopy(base)
    data["family_settings"] = {"conv_vae": {"hidden_dim": 32}}
    assert "family_settings" in load_error(write_spec(tmp_path, data))


def test_dotted_key_sets_a_nested_family_value():
    from study.spec import set_path

    config = {"tasks": {"y": {"kind": "classify", "weight": 1.0}}}
    assert set_path(config, "tasks.y.weight", 0.5) == {"tasks": {"y": {"kind": "classify", "weight": 0.5}}}
    assert config["tasks"]["y"]["weight"] == 1.0  # a copy
    with pytest.raises(KeyError, match="tasks.z"):
        set_path(config, "tasks.z.weight", 0.5)


def test_a_common_family_field_one_searched_family_lacks_is_refused_naming_it(tmp_path, base):
    data = family_search(base)
    data["search_space"]["family"]["choices"] = ["conv_vae", "mlp_vae"]
    data["family"] = {"hidden_dim": 32}  # conv_vae has hidden_dim; mlp_vae has hidden_widths
    data["family_settings"] = {}
    msg = load_error(write_spec(tmp_path, data))
    assert ": family.hidden_dim: unknown key 'hidden_dim'" in msg and msg.endswith("(in family 'mlp_vae')"), msg


@pytest.mark.parametrize("space, fragment", [
    ("{family: {type: categorical, choices: [conv_vae]}, factor_vae: {gamma: {type: categorical, choices: [10]}}}",
     "search_space.factor_vae: its own parameters, but 'factor_vae' is not among the searched families"),
    ("{conv_vae: {beta: {type: categorical, choices: [1]}}}",
     "search_space.conv_vae: a family's own parameters need the families searched"),
    ("{family: {type: categorical, choices: [conv_vae, factor_vae]}, beta: {type: categorical, choices: [1]}, "
     "conv_vae: {beta: {type: categorical, choices: [1, 4]}}}",
     "search_space.conv_vae.beta: beta is also searched for every family; keep one"),
    ("{family: {type: categorical, choices: [conv_vae, factor_vae]}, factor_vae: {gamma2: {type: categorical, "
     "choices: [1]}}}", "search_space.factor_vae.gamma2: unknown parameter; expected one of factor_vae"),
    ("{family: {type: categorical, choices: [conv_vae, factor_vae]}, factor_vae: {gamma: {type: float, low: 1, "
     "high: 4}}}", "search_space.factor_vae.gamma: grid search takes categorical choices"),
    ("{family: {type: categorical, choices: [conv_vae, factor_vae]}, factor_vae: {gamma: {type: categorical, "
     "choices: [-1]}}}", "search_space.factor_vae.gamma: "),
    ("{family: {type: categorical, choices: [conv_vae, factor_vae]}, factor_vae: {gamma: {type: categorical, "
     "choices: [1, one]}}}", "search_space.factor_vae.gamma.categorical.choices: choices must all be of one kind"),
])
def test_a_familys_own_parameters_are_checked_against_that_family(space, fragment):
    with pytest.raises(SpecError) as caught:
        load_spec(SMOKE, ["family={latent_dim: 4}", f"search_space={space}"])
    assert fragment in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
# --- study-level and label metrics -------------------------------------------------------------


def test_udr_with_repeats_loads_and_is_no_objective(tmp_path, base):
    data = copy.deepcopy(base)
    data["evaluation"]["metrics"] = ["mig", "udr"]
    data["search"]["repeats"] = 2
    spec = load_spec(write_spec(tmp_path, data))
    assert spec.evaluation.metrics == ["mig", "udr"] and spec.search.repeats == 2
    assert spec.info().evaluation.metrics == ["mig", "udr"]


def description(classes: dict[str, int], has_factors: bool = True):
    from datasets.registry import DataDescription

    return DataDescription(input_shape=(1, 64, 64), columns={"image": (1, 64, 64), **{k: () for k in classes}},
                           classes=classes, has_factors=has_factors, num_train=100, num_val=20,
                           factor_sizes=(3, 6) if has_factors else ())


def test_the_probe_label_must_be_a_label_column_of_the_data(tmp_path, base):
    data = copy.deepcopy(base)
    data["evaluation"].update(metrics=["mig", "probe"], probe_label="y")
    spec = load_spec(write_spec(tmp_path, data))
    spec.check_data(description({"y": 2}))  # jets-like data: y is a 2-class label
    with pytest.raises(ValueError, match=r"^evaluation.probe_label: 'y' is not a label column of dataset "
                                         r"'dsprites'; expected one of \['shape'\]$"):
        spec.check_data(description({"shape": 3}))


def test_udr_needs_no_factors(tmp_path, base):
    data = copy.deepcopy(base)
    data["evaluation"]["metrics"] = ["udr"]
    data["search"]["repeats"] = 2
    data["objective"] = {"metric": "val_elbo", "mode": "max"}
    load_spec(write_spec(tmp_path, data)).check_data(description({}, has_factors=False))
