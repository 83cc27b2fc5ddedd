"""Fault injection behind the Session (``VAE_STUDY_FAULT``), run through the loop with an in-memory session."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import replace

import pytest

import trainables.loop
from tests.trainables.test_loop import FakeSession, data, trial  # noqa: F401  (data: a fixture)
from trainables.faults import ENV, Fault, FaultySession, with_faults
from trainables.loop import run_worker
from trainables.protocol import Session
from trainables.session import TrainSession, TuneSession


class Killed(Exception):
    """Raised instead of the SIGKILL of a kill fault."""


@pytest.fixture
def killable(monkeypatch):
    def kill(self):
        raise Killed(self.epoch)

    monkeypatch.setattr(Fault, "kill", kill)


def beta(value: float, epochs: int = 3):
    config = trial(epochs=epochs)
    return replace(config, family_config=config.family_config.model_copy(update={"beta": value}))


def session(tmp_path, data, name: str, restore=None) -> FakeSession:  # noqa: F811
    keep = tmp_path / name
    keep.mkdir()
    return FakeSession(keep, *data, restore=restore)


def test_without_the_variable_the_session_is_handed_over_unwrapped(tmp_path, data, monkeypatch):  # noqa: F811
    monkeypatch.delenv(ENV, raising=False)
    plain = session(tmp_path, data, "plain")
    assert with_faults(plain, beta(4.0)) is plain


def test_a_malformed_variable_is_refused(tmp_path, data, monkeypatch):  # noqa: F811
    monkeypatch.setenv(ENV, "kill:beta:2")
    with pytest.raises(ValueError, match="KIND:KEY=VALUE:EPOCH"):
        with_faults(session(tmp_path, data, "s"), beta(4.0))


def test_kill_fires_right_after_the_report_of_its_epoch(tmp_path, data, monkeypatch, killable):  # noqa: F811
    monkeypatch.setenv(ENV, "kill:beta=4:2")
    inner = session(tmp_path, data, "hit")
    wrapped = with_faults(inner, beta(4.0))
    assert isinstance(wrapped, FaultySession)
    with pytest.raises(Killed):
        run_worker(beta(4.0), wrapped)
    assert [r["epoch"] for r in inner.reports] == [1, 2]
    assert inner.checkpoints[-1] is not None  # epoch 2 was reported with its checkpoint before the kill


def test_a_trial_the_fault_does_not_name_trains_as_without_it(tmp_path, data, monkeypatch, killable):  # noqa: F811
    monkeypatch.delenv(ENV, raising=False)
    plain = session(tmp_path, data, "plain")
    run_worker(beta(1.0), plain)
    for fault in ("kill:beta=4:2", "nan:beta=4:2", "nan:lr=0.5:1"):
        monkeypatch.setenv(ENV, fault)
        other = session(tmp_path, data, fault.replace(":", "_").replace("=", "-"))
        run_worker(beta(1.0), with_faults(other, beta(1.0)))
        timing = ("epoch_seconds", "train_images_per_s")
        assert [{k: v for k, v in r.items() if k not in timing} for r in other.reports] == \
               [{k: v for k, v in r.items() if k not in timing} for r in plain.reports], fault


def test_nan_makes_the_loop_raise_at_its_epoch(tmp_path, data, monkeypatch):  # noqa: F811
    monkeypatch.setenv(ENV, "nan:beta=4:2")
    inner = session(tmp_path, data, "hit")
    with pytest.raises(FloatingPointError, match="non-finite at epoch 2"):
        run_worker(beta(4.0), with_faults(inner, beta(4.0)))
    assert [r["epoch"] for r in inner.reports] == [1]


def test_nan_counts_epochs_from_the_resumed_checkpoint(tmp_path, data, monkeypatch):  # noqa: F811
    monkeypatch.delenv(ENV, raising=False)
    first = session(tmp_path, data, "first")
    run_worker(beta(4.0, epochs=1), first)
    monkeypatch.setenv(ENV, "nan:beta=4:3")
    resumed = session(tmp_path, data, "resumed", restore=first.checkpoints[-1])
    with pytest.raises(FloatingPointError, match="non-finite at epoch 3"):
        run_worker(beta(4.0, epochs=4), with_faults(resumed, beta(4.0, epochs=4)))
    assert [r["epoch"] for r in resumed.reports] == [2]


def members(cls) -> set[str]:
    """What ``cls`` defines: class attributes, methods, and attributes its ``__init__`` assigns to ``self``."""
    names = {name for name in vars(cls) if not name.startswith("_")}
    init = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    for node in ast.walk(init):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
    return names


@pytest.mark.parametrize("cls", [FaultySession, TrainSession, TuneSession, FakeSession])
def test_every_session_has_every_member_of_the_protocol(cls):
    wanted = {name for name in {*vars(Session), *Session.__annotations__} if not name.startswith("_")}
    assert wanted >= {"world_rank", "world_size", "node_id", "gpu_ids", "report", "checkpoint", "shard", "device",
                      "prepare"}
    assert wanted <= members(cls), wanted - members(cls)


def test_the_loop_knows_nothing_of_faults():
    source = inspect.getsource(trainables.loop)
    imported = {alias.name if isinstance(node, ast.Import) else node.module
                for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert not any(name and "fault" in name for name in imported), imported
    assert re.search(r"\bfault", source, re.IGNORECASE) is None
