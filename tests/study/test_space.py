"""Search space -> Tune param space and the seeded Optuna searcher, without starting Ray."""

from __future__ import annotations

import math

import pytest

from study.spec import StudySpec


def make_spec(**changes) -> StudySpec:
    data = {
        "name": "t",
        "dataset": {"name": "dsprites"},
        "family": {"name": "conv_vae", "latent_dim": 4},
        "search_space": {"beta": {"type": "categorical", "choices": [1, 2, 4]}},
        "search": {"algorithm": "grid", "repeats": 2},
    }
    data.update(changes)
    return StudySpec(**data)


def test_param_space_domains():
    from ray.tune.search.sample import Categorical, Float, Integer

    from study.space import param_space

    spec = make_spec(
        search_space={
            "beta": {"type": "float", "low": 0.5, "high": 16, "log": True},
            "latent_dim": {"type": "int", "low": 2, "high": 6},
            "lr": {"type": "categorical", "choices": [1e-3, 3e-3]},
            "hidden_dim": {"type": "fixed", "value": 32},
        },
        family={"name": "conv_vae"},
        search={"algorithm": "tpe", "num_samples": 4},
    )
    space = param_space(spec)
    assert isinstance(space["beta"], Float) and space["beta"].lower == 0.5 and space["beta"].upper == 16
    assert isinstance(space["latent_dim"], Integer)
    # Tune's randint excludes its upper bound; the spec's high is inclusive.
    assert space["latent_dim"].lower == 2 and space["latent_dim"].upper == 7
    assert isinstance(space["lr"], Categorical) and space["lr"].categories == [1e-3, 3e-3]
    assert space["hidden_dim"] == 32
    family, training = spec.trial_settings({"beta": 2.0, "latent_dim": 3, "lr": 3e-3, "hidden_dim": 32})
    assert (family.beta, family.latent_dim, family.hidden_dim, training.lr) == (2.0, 3, 32, 3e-3)


def test_num_trials_grid_times_repeats():
    from study.space import num_trials

    assert num_trials(make_spec()) == 6
    assert num_trials(make_spec(search={"algorithm": "grid", "num_samples": 2, "repeats": 3})) == 6
    assert num_trials(make_spec(search={"algorithm": "random", "num_samples": 5})) == 5


@pytest.mark.parametrize("algorithm, sampler", [("grid", "GridSampler"), ("tpe", "TPESampler"),
                                                ("random", "RandomSampler"), ("nsga2", "NSGAIISampler")])
def test_searcher_uses_seeded_optuna_sampler(algorithm, sampler):
    from ray.tune.search.optuna import OptunaSearch

    from study.space import RepeatSearcher, build_searcher

    search = {"algorithm": algorithm, "repeats": 2}
    if algorithm != "grid":
        search["num_samples"] = 3
    searcher = build_searcher(make_spec(search=search, seed=7))
    assert isinstance(searcher, RepeatSearcher) and searcher.repeats == 2
    assert isinstance(searcher.searcher, OptunaSearch)
    assert type(searcher.searcher._sampler).__name__ == sampler
    assert searcher.searcher.metric == "mig" and searcher.searcher.mode == "max"


def test_multi_objective_repeater_tells_the_mean_of_each_metric():
    from ray import tune

    from study.space import RepeatSearcher, build_searcher

    spec = make_spec(objective={"metric": ["val_recon_loss", "mig"], "mode": ["min", "max"]},
                     search={"algorithm": "nsga2", "num_samples": 2, "repeats": 2})
    repeater = build_searcher(spec)
    assert isinstance(repeater, RepeatSearcher)
    told = []
    repeater.searcher.on_trial_complete = lambda trial_id, result=None, **kw: told.append((trial_id, result))
    repeater.set_search_properties(None, None, {"beta": tune.choice([1, 2, 4])})
    first = repeater.suggest("a")
    second = repeater.suggest("b")
    assert first["beta"] == second["beta"] and {first["__trial_index__"], second["__trial_index__"]} == {0, 1}
    repeater.on_trial_complete("a", {"val_recon_loss": 10.0, "mig": 0.1})
    assert told == []
    repeater.on_trial_complete("b", {"val_recon_loss": 20.0, "mig": 0.3})
    assert told[0][0] == "a"
    assert told[0][1]["val_recon_loss"] == 15.0 and math.isclose(told[0][1]["mig"], 0.2)


def test_repeats_tell_the_mean_of_the_repeats_that_reported_and_an_error_when_none_did():
    from ray import tune

    from study.space import build_searcher

    repeater = build_searcher(make_spec(search={"algorithm": "random", "num_samples": 3, "repeats": 2}))
    told = []
    repeater.searcher.on_trial_complete = lambda trial_id, result=None, error=False: told.append((trial_id, result,
                                                                                                error))
    repeater.set_search_properties(None, None, {"beta": tune.choice([1, 2, 4])})
    configs = [repeater.suggest(t) for t in "abcd"]
    assert [c["__trial_index__"] for c in configs] == [0, 1, 0, 1]
    repeater.on_trial_complete("a", {"mig": 0.2})
    repeater.on_trial_complete("b", None, error=True)  # an errored repeat: the mean of the others
    repeater.on_trial_complete("c", None, error=True)
    repeater.on_trial_complete("d", {"mig": float("nan")})
    assert told == [("a", {"mig": 0.2}, False), ("c", None, True)]


def test_repeat_groups_survive_save_and_restore(tmp_path):
    from ray import tune

    from study.space import REPEATS_FILE, build_searcher

    spec = make_spec(search={"algorithm": "random", "num_samples": 3, "repeats": 2})
    first = build_searcher(spec)
    first.set_search_properties(None, None, {"beta": tune.choice([1, 2, 4])})
    config = first.suggest("a")
    first.save(str(tmp_path / "searcher-state.pkl"))
    assert (tmp_path / REPEATS_FILE).is_file()
    second = build_searcher(spec)
    second.set_search_properties(None, None, {"beta": tune.choice([1, 2, 4])})
    second.restore(str(tmp_path / "searcher-state.pkl"))
    again = second.suggest("b")  # the second repeat of the configuration suggested before the save
    assert again["beta"] == config["beta"] and again["__trial_index__"] == 1


# ---- per-family search spaces (a conditional space) ----------------------------------------------

FAMILIES = {"type": "categorical", "choices": ["beta_vae", "factor_vae", "dip_vae"]}
OWN = {
    "beta_vae": {"beta": {"type": "categorical", "choices": [1, 4, 16]}},
    "factor_vae": {"gamma": {"type": "categorical", "choices": [10, 40]}},
    "dip_vae": {"dip_type": {"type": "categorical", "choices": ["i", "ii"]},
                "lambda_od": {"type": "categorical", "choices": [1, 10]}},
}


def conditional(algorithm: str = "grid", **search) -> StudySpec:
    return make_spec(family={"latent_dim": 4}, search_space={"family": FAMILIES, **OWN},
                     search={"algorithm": algorithm, "repeats": 1, **search})


def test_the_grid_of_a_conditional_space_is_the_union_of_each_familys_grid():
    spec = conditional()
    assert spec.conditional and spec.grid_size == 3 + 2 + 4
    assert spec.searched_params == ["family", "beta_vae.beta", "factor_vae.gamma", "dip_vae.dip_type",
                                    "dip_vae.lambda_od"]
    points = spec.grid_points()
    assert {"family": "factor_vae", "factor_vae.gamma": 40} in points
    assert {"family": "dip_vae", "dip_vae.dip_type": "ii", "dip_vae.lambda_od": 10} in points
    assert all(set(p) <= {"family", *(k for k in p if k.startswith(p["family"] + "."))} for p in points)
    config, _ = spec.trial_settings({"family": "dip_vae", "dip_vae.dip_type": "ii", "dip_vae.lambda_od": 10})
    assert (type(config).__name__, config.dip_type, config.lambda_od, config.latent_dim) == ("DIPVAEConfig", "ii",
                                                                                             10.0, 4)


def test_a_conditional_grid_enqueues_every_point_once():
    from study.space import build_searcher, num_trials, param_space

    spec = conditional()
    assert param_space(spec) == {} and num_trials(spec) == 9
    searcher = build_searcher(spec)
    searcher.set_search_properties(None, None, param_space(spec))
    configs = [searcher.suggest(f"t{i}") for i in range(9)]
    seen = [{k: v for k, v in c.items() if k != "__trial_index__"} for c in configs]
    assert sorted(map(str, seen)) == sorted(map(str, spec.grid_points()))


def test_tpe_samples_only_the_chosen_familys_parameters():
    from study.space import build_searcher, param_space

    spec = make_spec(family={"latent_dim": 4}, search={"algorithm": "tpe", "num_samples": 12},
                     search_space={"family": FAMILIES, "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                   "beta_vae": {"beta": {"type": "float", "low": 1, "high": 16}},
                                   "factor_vae": {"gamma": {"type": "int", "low": 10, "high": 100}},
                                   "dip_vae": {"lambda_od": {"type": "fixed", "value": 5}}})
    searcher = build_searcher(spec)
    searcher.set_search_properties(None, None, param_space(spec))
    for i in range(12):
        config = searcher.suggest(f"t{i}")
        family = config["family"]
        own = {k for k in config if "." in k}
        assert own == {f"{family}.{field}" for field in {"beta_vae": ["beta"], "factor_vae": ["gamma"],
                                                            "dip_vae": ["lambda_od"]}[family]}, config
        assert 1e-4 <= config["lr"] <= 1e-2
        if family == "dip_vae":
            assert config["dip_vae.lambda_od"] == 5
