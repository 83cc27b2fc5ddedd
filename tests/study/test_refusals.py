"""Bad input refused before Ray starts: exit code 2, one bounded line on stderr, nothing written.

Each case runs ``study.run.main`` in-process with Ray's start replaced by a tripwire, so a case
that reached Ray would fail loudly (and cost no cluster). The subprocess contract (no traceback,
exit code of the real process) is covered by ``test_cli_errors.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pytest

import study.checks as checks
import study.run as run_module
import study.tuning as tuning
from analysis.cli import MAX_ERROR_CHARS
from analysis.results import StudyDir
from study.spec import load_spec
from tests.conftest import write_dsprites_npz

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"

TOY = """\
name: toy
seed: 0
dataset: {name: toy, kind: moons, n: 200, val_fraction: 0.2}
family: {name: mlp_vae, latent_dim: 2, hidden_widths: [8]}
search_space:
  beta: {type: categorical, choices: [0.5, 1.0]}
objective: {metric: val_elbo, mode: max}
search: {algorithm: grid}
training: {epochs: 1, batch_size: 32}
evaluation: {metrics: []}
"""


class RayStarted(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Every case must be refused before Ray starts: starting it fails the test."""

    def tripwire(*args, **kwargs):
        raise RayStarted("Ray was started for bad input")

    monkeypatch.setattr(tuning, "init_ray", tripwire)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture
def data(tmp_path) -> Path:
    return write_dsprites_npz(tmp_path / "dsprites.npz", num=300)


def refuse(capsys, args: list, *fragments: str) -> str:
    """Runs the CLI in-process; asserts exit 2 and one bounded ``error:`` line holding ``fragments``."""
    code = run_module.main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert len(lines[0]) <= len("error: ") + MAX_ERROR_CHARS, len(lines[0])
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def smoke(storage: Path, data: Path, *sets: str) -> list:
    args = [SMOKE, "--set", f"storage_path={storage}", "--set", f"dataset.path={data}"]
    for item in sets:
        args += ["--set", item]
    return args


# ---- a family's config against the data and the training section ---------------------------------


@pytest.mark.parametrize("sets, fragments", [
    pytest.param(["family.filters=[8, 8, 8, 8, 8, 8, 8]"], ["family.filters:", "divisible by 128", "64 pixels"],
                 id="image-size-the-filters-cannot-take"),
    pytest.param(["family.filters=[8, 0]"], ["family.filters.1", "greater than 0"], id="zero-width-filter"),
    pytest.param(["family.filters=[8, -4]"], ["family.filters.1", "greater than 0"], id="negative-width-filter"),
    pytest.param(["family.name=factor_vae", "training.optimizer=sgd", "search_space.beta.choices=[1]"], ["training.optimizer:", "adam", "sgd"],
                 id="factor-vae-with-sgd"),
    pytest.param(["family.name=multitask_vae", "family.tasks={size: {kind: classify, classes: 3}}"],
                 ["family.tasks.size.column", "no column 'size'"], id="task-column-missing"),
    pytest.param(["family.name=multitask_vae", "family.tasks={shape: {kind: classify, classes: 5}}"],
                 ["family.tasks.shape.classes", "3 classes", "classes=5"], id="task-class-count"),
])
def test_family_setup_refused_before_ray(tmp_path, capsys, data, sets, fragments):
    storage = tmp_path / "studies"
    refuse(capsys, smoke(storage, data, *sets), *fragments)
    assert not storage.exists()


def test_cvae_class_count_against_the_data(tmp_path, capsys):
    spec = TOY.replace("kind: moons", "kind: blobs, centers: 3").replace(
        "family: {name: mlp_vae, latent_dim: 2, hidden_widths: [8]}",
        "family: {name: mlp_cvae, latent_dim: 2, hidden_widths: [8], num_classes: 2}")
    refuse(capsys, [write(tmp_path, spec), "--set", f"storage_path={tmp_path / 's'}"],
           "family.num_classes:", "3 values", "num_classes=2")


def test_cvae_on_data_without_labels(tmp_path, capsys, data):
    refuse(capsys, smoke(tmp_path / "s", data, "family={name: mlp_cvae, latent_dim: 2, num_classes: 3}"),
           "family.num_classes:", "'label' column")


def test_dsprites_images_of_another_size_refused_before_ray(tmp_path, capsys):
    """A 32x32 file in the dSprites layout used to validate and fail in the trials."""
    import numpy as np

    path = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(path, imgs=rng.integers(0, 2, (10, 32, 32), dtype=np.uint8), latents_classes=rng.integers(0, 3, (10, 5)))
    refuse(capsys, smoke(tmp_path / "s", path), str(path), "32x32", "64x64")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("rows, val_fraction", [(1, 0.2), (3, 0.1), (10, 0.99)])
def test_dsprites_too_few_rows_to_split_refused_before_ray(tmp_path, capsys, rows, val_fraction):
    path = write_dsprites_npz(tmp_path / "few.npz", num=rows)
    refuse(capsys, smoke(tmp_path / "s", path, f"dataset.val_fraction={val_fraction}"), "imgs" if rows < 2 else
           "empty train or val split")


# ---- every requested metric must be producible ----------------------------------------------------


def test_mig_on_data_without_factors(tmp_path, capsys):
    spec = TOY.replace("evaluation: {metrics: []}", "evaluation: {metrics: [mig]}").replace(
        "objective: {metric: val_elbo, mode: max}", "objective: {metric: mig, mode: max}")
    refuse(capsys, [write(tmp_path, spec), "--set", f"storage_path={tmp_path / 's'}"],
           "evaluation.metrics:", "mig needs ground-truth factors", "'toy'")
    assert not (tmp_path / "s").exists()


def constant_factors(tmp_path: Path, varying: int | None = None) -> Path:
    """A dSprites-layout file whose factors are all constant (or all but column ``varying``)."""
    import numpy as np

    path = write_dsprites_npz(tmp_path / "constant.npz", num=300)
    with np.load(path) as raw:
        arrays = dict(raw)
    classes = np.zeros_like(arrays["latents_classes"])
    if varying is not None:
        classes[:, varying] = arrays["latents_classes"][:, varying]
    np.savez(path, **{**arrays, "latents_classes": classes})
    return path


@pytest.mark.parametrize("metric", ["mig", "sap", "dci_fast", "modularity_explicitness", "beta_vae", "factor_vae"])
def test_factor_metric_when_every_factor_is_constant(tmp_path, capsys, metric):
    sets = [f"evaluation.metrics=[{metric}]", "objective.metric=val_elbo"]
    if metric == "factor_vae":
        sets += ["family.name=factor_vae", "search_space.beta.choices=[1]"]
    refuse(capsys, smoke(tmp_path / "s", constant_factors(tmp_path), *sets),
           "evaluation.metrics:", metric, "'dsprites'", "constant")
    assert not (tmp_path / "s").exists()


def test_metrics_on_constant_factors_that_need_no_varying_factor_pass_the_checks(tmp_path):
    """gaussian_tc scores the codes alone; one varying factor is enough for the others."""
    storage = tmp_path / "s"
    spec = load_spec(SMOKE, [f"storage_path={storage}", f"dataset.path={constant_factors(tmp_path)}",
                             "evaluation.metrics=[gaussian_tc]", "objective.metric=gaussian_tc",
                             "objective.mode=min"])
    checks.load_data(spec)
    spec = load_spec(SMOKE, [f"storage_path={storage}", f"dataset.path={constant_factors(tmp_path, varying=3)}"])
    checks.load_data(spec)


def test_mig_of_a_family_without_an_encoder(tmp_path, capsys, data):
    refuse(capsys, smoke(tmp_path / "s", data, "family={name: dcgan, latent_dim: 4, filters: [8, 8]}",
                         "search_space={lr: {type: categorical, choices: [0.001, 0.002]}}"),
           "evaluation.metrics:", "no encoder", "dcgan")


def test_udr_with_one_seed_per_configuration(tmp_path, capsys, data):
    line = refuse(capsys, smoke(tmp_path / "s", data, "evaluation.metrics=[mig, udr]"))
    assert line.endswith(": evaluation.metrics: udr compares the seeds of a configuration; it needs "
                         "search.repeats >= 2 (got 1)"), line
    assert not (tmp_path / "s").exists()


def test_probe_label_that_the_data_lacks(tmp_path, capsys, data):
    refuse(capsys, smoke(tmp_path / "s", data, "evaluation.metrics=[mig, probe]", "evaluation.probe_label=y"),
           "evaluation.probe_label: 'y' is not a label column of dataset 'dsprites'")
    assert not (tmp_path / "s").exists()


def test_asha_metric_not_reported_every_epoch(tmp_path, capsys, data):
    refuse(capsys, smoke(tmp_path / "s", data, "scheduler={name: asha, metric: mig}"), "scheduler.metric:", "mig")


# ---- the spec file itself -------------------------------------------------------------------------


def test_mixed_type_categorical_choices(tmp_path, capsys, data):
    refuse(capsys, smoke(tmp_path / "s", data, "search_space.beta={type: categorical, choices: [1, four]}"),
           "search_space.beta.categorical.choices", "one kind")


@pytest.mark.parametrize("text, fragments", [
    pytest.param("name: a\nname: b\n", ["duplicate key 'name'", "line 2"], id="duplicate-top-level-key"),
    pytest.param("name: a\ntraining: {epochs: 1, epochs: 2}\n", ["duplicate key 'epochs'"], id="duplicate-nested-key"),
    pytest.param("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
                 ["aliases (*name) are not allowed"], id="alias-bomb"),
    pytest.param("1: x\nname: a\n", ["section names must be strings"], id="non-string-key"),
    pytest.param("- a\n- b\n", ["expected a mapping"], id="a-list"),
])
def test_bad_yaml(tmp_path, capsys, text, fragments):
    refuse(capsys, [write(tmp_path, text), "--set", f"storage_path={tmp_path / 's'}"], *fragments)


def test_alias_in_an_override(tmp_path, capsys, data):
    refuse(capsys, smoke(tmp_path / "s", data, "training=&a {epochs: *a}"), "--set")


def test_spec_too_large(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text("name: a\n" + "#" * (2 << 20) + "\n")
    refuse(capsys, [path], "at most")


@pytest.mark.parametrize("sets, fragments", [
    pytest.param(["dataset.name=[dsprites]"], ["dataset.name:", "expected a dataset name"], id="list-dataset-name"),
    pytest.param(["family.name={a: 1}"], ["family.name:", "expected a family name"], id="mapping-family-name"),
    pytest.param(["family={latent_dim: 4}", "search_space.family={type: categorical, choices: [[conv_vae]]}"],
                 ["search_space.family"], id="list-in-family-choices"),
])
def test_list_or_mapping_where_a_name_is_expected(tmp_path, capsys, data, sets, fragments):
    refuse(capsys, smoke(tmp_path / "s", data, *sets), *fragments)


def test_error_lines_are_bounded(tmp_path, capsys, data):
    line = refuse(capsys, smoke(tmp_path / "s", data, f"training.{'x' * 5000}=1"), "unknown key", "epochs")
    assert "..." in line


# ---- storage paths --------------------------------------------------------------------------------


def test_storage_paths(tmp_path, capsys, data):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {
        "/proc/vae-study": "cannot be created or written",
        f"{loop}/studies": "cannot be created or written",
        f"{tmp_path}/{'n' * 300}": "cannot be created or written",
        f"{afile}/studies": "is a file",
    }
    for storage, fragment in cases.items():
        refuse(capsys, smoke(Path(storage), data), "storage_path:", fragment)
    refuse(capsys, smoke(tmp_path / "x", data, "storage_path=a\0b"), "storage_path")


# ---- data files -----------------------------------------------------------------------------------


def jets_spec(tmp_path: Path, path: Path | str) -> Path:
    return write(tmp_path, f"""\
name: jets
dataset: {{name: jets, path: {path}, image_size: 24, image_mode: crop, block_rows: 16, rows_per_block: 16}}
family: {{name: conv_vae, latent_dim: 2, filters: [4, 4], hidden_dim: 8, likelihood: gaussian}}
search_space: {{beta: {{type: categorical, choices: [1]}}}}
objective: {{metric: val_elbo, mode: max}}
search: {{algorithm: grid}}
training: {{epochs: 1}}
evaluation: {{metrics: []}}
storage_path: {tmp_path / 'studies'}
""", "jets.yaml")


def test_corrupt_hdf5_chunk(tmp_path, capsys):
    from datasets.jets import write_synthetic

    path = write_synthetic(tmp_path / "jets.h5", 96, seed=0, size=25, chunk_rows=16)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 4096] = bytes(4096)  # zero a stretch of compressed chunks
    path.write_bytes(bytes(raw))
    line = refuse(capsys, [jets_spec(tmp_path, path)], str(path))
    assert not (tmp_path / "studies").exists(), line


def test_dangling_external_link(tmp_path, capsys):
    from datasets.jets import write_synthetic

    real = write_synthetic(tmp_path / "real.h5", 64, seed=0, size=25, chunk_rows=16)
    path = tmp_path / "linked.h5"
    with h5py.File(real, "r") as source, h5py.File(path, "w") as out:
        for key in source:
            if key != "X_jets":
                out[key] = source[key][()]
        out["X_jets"] = h5py.ExternalLink("missing.h5", "/X_jets")
    refuse(capsys, [jets_spec(tmp_path, path)], str(path))


# ---- data objects in a bucket (a loopback S3 server) ----------------------------------------------


def test_a_missing_data_object_bucket_or_scheme_is_refused_before_ray(tmp_path, capsys, s3_bucket):
    storage = tmp_path / "studies"
    cases = {
        f"{s3_bucket.uri}/absent.npz": "no such object (expected a dSprites .npz)",
        "s3://vae-no-such-bucket/d.npz": "no such bucket 'vae-no-such-bucket'",
        "nosuchscheme://bucket/d.npz": "unknown storage scheme nosuchscheme://",
    }
    for uri, fragment in cases.items():
        refuse(capsys, smoke(storage, uri), f"dataset.path: {uri}: {fragment}")
    assert not storage.exists()
    jets = jets_spec(tmp_path, f"{s3_bucket.uri}/jets/absent.h5")
    refuse(capsys, [jets], f"dataset.path: {s3_bucket.uri}/jets/absent.h5: no such object (expected an HDF5 jets file)")
    assert not (tmp_path / "studies").exists()


def test_resume_with_another_data_object(tmp_path, capsys, data, s3_bucket):
    uri = s3_bucket.put("data/dsprites.npz", data)
    study = fake_study(tmp_path, uri, capsys)
    saved = json.loads((study / "data.json").read_text())["fingerprint"]
    assert (saved["path"], saved["size"], saved["scope"]) == (uri, data.stat().st_size, "etag")
    write_dsprites_npz(data, num=300, seed=1)  # same key, other content
    s3_bucket.put("data/dsprites.npz", data)
    refuse(capsys, smoke(tmp_path / "studies", uri), "dataset: the study started on", uri, "ETag")
    assert json.loads((study / "data.json").read_text())["fingerprint"] == saved


# ---- arithmetic queries (sequence models) ---------------------------------------------------------


def arithmetic(tmp_path: Path, *sets: str, config: str = "arithmetic_text2text.yaml") -> list:
    args = [REPO / "configs" / config, "--set", f"storage_path={tmp_path / 'studies'}", "--set", "dataset.max_operand=9"]
    for item in sets:
        args += ["--set", item]
    return args


@pytest.mark.parametrize("sets, fragments", [
    pytest.param(["dataset.max_operand=100"], ["dataset.max_operand", "99"], id="operands-that-do-not-fit"),
    pytest.param(["dataset.train_fraction=1.5"], ["dataset.train_fraction", "1"], id="fraction-above-one"),
    pytest.param(["search_space={dataset.train_fraction: {type: categorical, choices: [0.0, 0.5]}}"],
                 ["dataset.train_fraction", "0.0"], id="searched-fraction-of-zero"),
    pytest.param(["family.input=image"], ["family.input", "query_images", "dataset.input"], id="kind-not-provided"),
])
def test_arithmetic_options_refused_before_ray(tmp_path, capsys, sets, fragments):
    refuse(capsys, arithmetic(tmp_path, *sets), *fragments)
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("entry, value", [
    pytest.param("{type: categorical, choices: [0.001, 0.5]}", "0.001", id="categorical-choice"),
    pytest.param("{type: fixed, value: 0.002}", "0.002", id="fixed-value"),
    pytest.param("{type: float, low: 0.0001, high: 0.5}", "0.0001", id="low-bound-of-a-range"),
])
def test_searched_train_fraction_that_keeps_no_train_row(tmp_path, capsys, entry, value):
    """max_operand 9: 200 queries, 180 train rows; a fraction that rounds to 0 rows would train on one."""
    sets = [f"search_space={{encoder_layers: {{type: categorical, choices: [1]}}, dataset.train_fraction: {entry}}}"]
    if "float" in entry:
        sets += ["search={algorithm: random, num_samples: 2}"]
    refuse(capsys, arithmetic(tmp_path, *sets), "search_space.dataset.train_fraction", value, "180 train rows")
    assert not (tmp_path / "studies").exists()


def test_missing_or_non_idx_mnist_refused_before_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MNIST_PATH", raising=False)
    image = ["dataset.input=image", "family.input=image"]
    refuse(capsys, arithmetic(tmp_path, *image, f"dataset.path={tmp_path / 'nowhere'}"), "dataset.path",
           str(tmp_path / "nowhere"))
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(b"<html>not the digits</html>")
    refuse(capsys, arithmetic(tmp_path, *image, f"dataset.path={folder}"), "t10k-images-idx3-ubyte.gz")
    assert not (tmp_path / "studies").exists()


# ---- study directories ----------------------------------------------------------------------------


def test_overwrite_deletes_only_a_study(tmp_path, capsys, data):
    storage = tmp_path / "studies"
    precious = storage / "smoke"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    refuse(capsys, smoke(storage, data) + ["--overwrite"], "not a vae-study study")
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_corrupt_spec_json_in_the_study_directory(tmp_path, capsys, data):
    study = tmp_path / "studies" / "smoke"
    study.mkdir(parents=True)
    (study / "spec.json").write_text("{not json")
    refuse(capsys, smoke(tmp_path / "studies", data), "spec.json", "not valid JSON")


def fake_study(tmp_path: Path, data: Path | str, capsys, storage: str | Path | None = None) -> Path:
    """A study directory as a first run leaves it before training (spec.json, data.json)."""
    storage = tmp_path / "studies" if storage is None else storage
    spec = load_spec(SMOKE, [f"storage_path={storage}", f"dataset.path={data}"])
    study = Path(spec.study_location)
    study.mkdir(parents=True)
    (study / "spec.json").write_text(spec.model_dump_json(indent=2))
    prepared = checks.load_data(spec)
    (study / "data.json").write_text(json.dumps({"source": str(data), "fingerprint": prepared.fingerprint().model_dump()}))
    return study


def test_resume_with_another_data_file(tmp_path, capsys, data):
    study = fake_study(tmp_path, data, capsys)
    write_dsprites_npz(data, num=300, seed=1)  # same path and size, other content
    refuse(capsys, smoke(tmp_path / "studies", data), "dataset:", "the study started on", "sha256")
    assert json.loads((study / "data.json").read_text())["fingerprint"]["path"] == str(data.resolve())


def test_resume_accepts_a_spec_saved_before_a_defaulted_field_existed(tmp_path, capsys, data):
    study = fake_study(tmp_path, data, capsys)
    saved = json.loads((study / "spec.json").read_text())
    del saved["evaluation"]["snapshot_epochs"], saved["resources"]["cpu_fallback"]  # as an older version wrote it
    (study / "spec.json").write_text(json.dumps(saved))
    spec = load_spec(SMOKE, [f"storage_path={tmp_path / 'studies'}", f"dataset.path={data}"])
    assert checks.check_study_dir(spec, StudyDir(spec.study_location), overwrite=False)


def test_resume_refuses_a_spec_that_differs_or_holds_a_field_no_longer_known(tmp_path, capsys, data):
    study = fake_study(tmp_path, data, capsys)
    saved = json.loads((study / "spec.json").read_text())
    (study / "spec.json").write_text(json.dumps({**saved, "seed": saved["seed"] + 1}))
    refuse(capsys, smoke(tmp_path / "studies", data), "another spec", "differs in seed")
    (study / "spec.json").write_text(json.dumps({**saved, "retired_field": 1}))
    refuse(capsys, smoke(tmp_path / "studies", data), "another spec", "differs in retired_field")


def test_resume_refuses_a_study_copied_from_where_it_started(tmp_path, capsys, data, monkeypatch):
    import shutil

    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")  # storage_path: studies, relative as in the configs
    study = fake_study(tmp_path / "project", data, capsys, storage="studies")
    record = json.loads((study / "data.json").read_text())
    (study / "data.json").write_text(json.dumps({**record, "started_in": str(study.resolve())}))
    shutil.copytree(tmp_path / "project", tmp_path / "copy")
    monkeypatch.chdir(tmp_path / "copy")
    refuse(capsys, [SMOKE, "--set", "storage_path=studies", "--set", f"dataset.path={data}"],
           "the study was started in", str(study.resolve()), "--overwrite")
    checks.check_same_place(StudyDir(study))  # where it started: accepted


def test_resume_refuses_a_directory_writable_by_others(tmp_path, capsys, data):
    study = fake_study(tmp_path, data, capsys)
    (study / "tuner.pkl").write_bytes(b"planted")
    os.chmod(study / "tuner.pkl", 0o666)
    refuse(capsys, smoke(tmp_path / "studies", data), "tuner.pkl", "writable by group or others", "like code")


def test_resume_refuses_a_symlinked_state_file(tmp_path, capsys, data):
    study = fake_study(tmp_path, data, capsys)
    (tmp_path / "elsewhere.pkl").write_bytes(b"planted")
    (study / "tuner.pkl").symlink_to(tmp_path / "elsewhere.pkl")
    refuse(capsys, smoke(tmp_path / "studies", data), "tuner.pkl", "symbolic link")


def test_resume_refuses_a_directory_owned_by_another_user(tmp_path, capsys, data, monkeypatch):
    fake_study(tmp_path, data, capsys)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    refuse(capsys, smoke(tmp_path / "studies", data), "owned by uid", "like code")


def test_fp16_on_the_cpu_refused_before_ray(tmp_path, capsys, data):
    storage = tmp_path / "studies"
    refuse(capsys, smoke(storage, data, "training.precision=fp16"), "training.precision: ",
           "fp16 trains on CUDA GPUs only")
    assert not storage.exists()
