"""The per-worker training loop: epochs over a dataset shard, one report and checkpoint per epoch.

``run_worker`` trains one model (a :class:`~trainables.trial.TrialConfig`) the way nanoGPT's
``train.py`` reads: resume, then per epoch train, validate, evaluate after the last epoch, and
checkpoint and report. Rank 0 validates and checkpoints (model, optimizers, epoch, step,
snapshots and the trial's description with its provenance: :mod:`trainables.checkpoint`); the
evaluation after the last epoch is the one the trial was handed (:attr:`TrialConfig.evaluate`;
the loop itself knows no metric). It resumes from the checkpoint its
:class:`~trainables.protocol.Session` hands it. The sessions of Ray Train and Ray Tune are in
:mod:`trainables.session`; the Tune trial that turns a study spec into a trial lives in ``study.driver``.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from trainables.checkpoint import Provenance, load_saved_trial, provenance, save_checkpoint
from trainables.precision import Amp
from trainables.protocol import Session, Shard, supports, unwrap
from trainables.training import TrainingSpec
from trainables.trial import HeldOut, TrialConfig, build_model

__all__ = ["run_worker", "TrainState", "EpochResult"]

Metrics = dict[str, float | str]  # one report: metric name -> value (node_id: a string)
# The share of its attempted optimisation steps a trial's fp16 loss scaler may skip, checked from
# the second epoch on (check_trained). The scaler starts at 2**16 and halves the scale at each
# overflow, so a fresh trial skips its first steps until the scale fits (11 of the smoke conv VAE's
# first 38), then about one in 2,000 (GradScaler's growth_interval) as it tries a doubled scale.
# More than half skipped means the gradients overflow at every scale: the model is not training.
MAX_SKIPPED_SHARE = 0.5


@dataclass
class TrainState:
    """One trial's training state on this worker, from its resume to its last epoch.

    Attributes:
        model: The model as the session prepared it (DDP-wrapped with several workers).
        core: The module inside (what is validated, evaluated and checkpointed).
        optimizers: The family's optimizers, or the one of ``training.optimizer``.
        amp: Autocast and fp16 loss scaling of ``training.precision``.
        epoch: Epochs done.
        step: Optimisation steps taken (an fp16 step the loss scaler skipped does not count).
        stamp: The trial's provenance (``ended_at`` set at each checkpoint).
        skipped: Optimisation steps the fp16 loss scaler skipped (gradients overflowed).
        snapshots: Reconstructions of the fixed validation rows by epoch (``snapshots.npz``).
        snapshot_rows: Those rows (the first of the first validation pass), or None before it.
    """

    model: torch.nn.Module
    core: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]
    amp: Amp
    epoch: int
    step: int
    stamp: Provenance
    skipped: int = 0
    snapshots: dict[str, np.ndarray] = field(default_factory=dict)
    snapshot_rows: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class EpochResult:
    """What one pass over a shard gives back.

    Attributes:
        terms: Each scalar loss term's mean over the pass's rows.
        rows: Rows read.
        steps: Optimisation steps taken (0 on an evaluation pass).
        skipped: Optimisation steps the fp16 loss scaler skipped (0 on an evaluation pass).
        predictions: On evaluation passes, the model outputs' per-sample ``predictions``
            concatenated over the pass, float32 on the CPU, by name; else ``{}``.
        first_rows: On evaluation passes with ``keep_first``, the first ``keep_first`` rows of the
            shard by column (on the device); else None.
    """

    terms: dict[str, float]
    rows: int
    steps: int
    skipped: int
    predictions: dict[str, torch.Tensor]
    first_rows: dict[str, torch.Tensor] | None


def run_worker(config: TrialConfig, session: Session) -> None:
    """Trains one model for ``training.epochs`` epochs (or ``training.steps`` steps), reporting
    once per epoch.

    A family may take over the optimisation step (GANs, FactorVAE's discriminator) by giving
    its module ``configure_optimizers(training) -> list[Optimizer]`` and
    ``training_step(batch, optimizers, amp) -> dict[str, Tensor]`` (scalar terms, ``loss`` among
    them); otherwise one optimizer of ``training.optimizer`` minimises ``model(batch).loss``.
    Forward passes run under ``training.precision``'s autocast (:class:`~trainables.precision.Amp`).
    Loss terms accumulate on the device; the host syncs once per pass (per epoch).

    ``step`` counts optimisation steps taken: a step the fp16 loss scaler skips (its gradients
    overflowed) is not counted, and is reported in ``skipped_steps``; a ``training.steps`` budget
    is a budget of steps taken (the trial attempts more batches when some are skipped).

    Raises:
        FloatingPointError: If the training loss becomes NaN or infinite, or the trial trained
            nothing (see :func:`check_trained`); the trial errors.
        ValueError: If ``training.precision`` is fp16 and the trial trains on the CPU.
        RuntimeError: If a dataset shard yields no rows.
    """
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed + session.world_rank)
    device = session.device()
    state = resume(config, session, device)
    train_shard = session.shard("train")
    val_shard = session.shard("val") if session.world_rank == 0 else None
    while not _finished(config.training, state):
        start = time.perf_counter()
        metrics = train_epoch(config, session, state, train_shard, device)
        if val_shard is not None:  # rank 0
            metrics.update(validate(config, state, val_shard, device))
            if _finished(config.training, state) and config.evaluate is not None:
                metrics.update(evaluate(config, state, val_shard, device))
        metrics["epoch_seconds"] = time.perf_counter() - start
        checkpoint_and_report(config, session, state, metrics)


def resume(config: TrialConfig, session: Session, device: torch.device) -> TrainState:
    """The trial's model, optimizers and counts: fresh, or restored from the session's checkpoint.

    On the CPU a model with the ``memory_format`` ability (the conv families) trains with its
    parameters in that format (channels_last); on CUDA it stays contiguous (not measured there yet).

    The weights are loaded before ``session.prepare`` (so every DDP worker starts from them) and
    the optimizer states after it (``load_state_dict`` moves them to the parameters' device).

    Raises:
        ValueError: If ``training.precision`` is fp16 and ``device`` is the CPU
            (:func:`~trainables.precision.resolve_precision`).
    """
    amp = Amp(config.training.precision, device)  # resolves auto; refuses fp16 on the CPU before any work
    model = build_model(config)
    saved = None
    checkpoint = session.checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            saved = load_saved_trial(directory)
        model.load_state_dict(saved.model)
    if device.type == "cpu" and supports(model, "memory_format"):  # channels_last for conv nets: measured
        model = model.to(memory_format=model.memory_format)  # faster on the CPU (benchmarks/precision.py)
    stamp = provenance(device, config.threads, session.node_id, saved.started_at if saved else None,
                       gpu_ids=session.gpu_ids, precision=amp.precision)
    model = session.prepare(model)  # on its device (DDP-wrapped with several workers) before the optimizer
    core = unwrap(model)
    if supports(core, "configure_optimizers"):
        optimizers = list(core.configure_optimizers(config.training))
    else:
        optimizers = [_optimizer(config.training, model.parameters())]
    state = TrainState(model, core, optimizers, amp, epoch=0, step=0, stamp=stamp)
    if saved is not None:
        for optimizer, optimizer_state in zip(optimizers, saved.optimizers):
            optimizer.load_state_dict(optimizer_state)
        state.epoch, state.step, state.skipped = saved.epoch, saved.step, saved.skipped
        state.snapshots = saved.snapshots
        state.amp.load_state_dict(saved.scaler)
    return state


def train_epoch(config: TrialConfig, session: Session, state: TrainState, shard: Shard,
                device: torch.device) -> Metrics:
    """One training epoch (stopping at the step budget): advances ``state.epoch``, ``state.step``
    (steps taken) and ``state.skipped``.

    Returns:
        ``epoch``, ``step`` (steps taken, cumulative), ``skipped_steps`` (cumulative),
        ``train_<term>`` per loss term, ``train_images_per_s`` (all workers), ``train_rows``
        (this worker's) and ``node_id`` (when on Ray).

    Raises:
        FloatingPointError: If a training term's mean is NaN or infinite, or the trial trained
            nothing (:func:`check_trained`).
    """
    training = config.training
    state.epoch += 1
    start = time.perf_counter()
    state.model.train()
    budget = None if training.steps is None else training.steps - state.step
    result = _run_epoch(state.model, shard, training.batch_size, device, state.optimizers, amp=state.amp,
                        max_steps=budget)
    state.step += result.steps
    state.skipped += result.skipped
    if not all(math.isfinite(v) for v in result.terms.values()):
        raise FloatingPointError(f"training loss became non-finite at epoch {state.epoch}: {result.terms}")
    check_trained(state, result)
    metrics: Metrics = {"epoch": state.epoch, "step": state.step, "skipped_steps": state.skipped,
                        **{f"train_{k}": v for k, v in result.terms.items()}}
    metrics["train_images_per_s"] = result.rows * session.world_size / (time.perf_counter() - start)
    metrics["train_rows"] = result.rows  # rows this worker read this epoch
    if session.node_id is not None:
        metrics["node_id"] = session.node_id  # which Ray node trained it
    return metrics


def check_trained(state: TrainState, result: EpochResult) -> None:
    """Errors a trial whose numbers would be an untrained model's: one that has taken no
    optimisation step, whose epoch took none of the steps it attempted, or (from its second epoch)
    whose loss scaler skipped more than :data:`MAX_SKIPPED_SHARE` of the steps it attempted.

    Raises:
        FloatingPointError: One line: how many steps the loss scaler skipped of how many, and why.
    """
    attempted = state.step + state.skipped
    if state.step and result.steps and not (state.epoch > 1 and state.skipped > MAX_SKIPPED_SHARE * attempted):
        return
    if state.step == 0:
        what = f"{state.skipped} of {attempted} optimisation steps (gradients overflowed); nothing was trained"
    elif result.steps == 0:
        what = (f"all {result.skipped} optimisation steps of epoch {state.epoch} (gradients overflowed); "
                f"the model stopped training")
    else:
        what = (f"{state.skipped} of {attempted} optimisation steps by epoch {state.epoch}, more than "
                f"{MAX_SKIPPED_SHARE:.0%} (gradients overflowed); the model is not training")
    raise FloatingPointError(f"training.precision={state.amp.precision}: the loss scaler skipped {what}; "
                             f"use training.precision bf16 or fp32")


def validate(config: TrialConfig, state: TrainState, shard: Shard, device: torch.device) -> Metrics:
    """A pass over the validation shard in eval mode; takes the epoch's snapshot when due.

    Returns:
        ``val_<term>`` per loss term, ``val_elbo`` (``-(recon_loss + kl)``, nats per sample) when
        the model has both terms, and the model's and the dataset's metrics of the pass's
        predictions as ``val_<name>``.
    """
    core = state.core
    core.eval()
    with torch.no_grad():
        result = _run_epoch(core, shard, config.training.batch_size, device, None,
                            keep_first=config.snapshot_samples, amp=state.amp)
    metrics: Metrics = {f"val_{k}": v for k, v in result.terms.items()}
    if {"recon_loss", "kl"} <= set(result.terms):
        metrics["val_elbo"] = -(result.terms["recon_loss"] + result.terms["kl"])
    if result.predictions and supports(core, "validation_metrics"):
        metrics.update({f"val_{k}": v for k, v in core.validation_metrics(result.predictions).items()})
    if config.validation_metrics is not None:
        metrics.update({f"val_{k}": v for k, v in config.validation_metrics(result.predictions).items()})
    if state.snapshot_rows is None:
        state.snapshot_rows = result.first_rows
    _snapshot(config, state)
    return metrics


def evaluate(config: TrialConfig, state: TrainState, shard: Shard, device: torch.device) -> dict[str, float]:
    """The end-of-trial evaluation the trial was handed, on the model in eval mode and the validation images.

    Raises:
        ValueError: Whatever the evaluation raises when a requested metric cannot be computed
            (``analysis.evaluation.MetricUnavailable`` is one).
    """
    state.core.eval()
    return config.evaluate(state.core, device, _held_out(shard, config.training.batch_size))


def checkpoint_and_report(config: TrialConfig, session: Session, state: TrainState, metrics: Metrics) -> None:
    """Reports the epoch; rank 0 with a checkpoint of it (see :mod:`trainables.checkpoint`)."""
    if session.world_rank != 0:
        session.report(metrics, None)
        return
    state.stamp = state.stamp.ended()
    # Ray copies the checkpoint into the trial's storage during report(); the local copy then goes.
    with tempfile.TemporaryDirectory(prefix="vae-study-ckpt-") as checkpoint_dir:
        save_checkpoint(checkpoint_dir, state.core, state.optimizers, state.epoch, config, state.snapshots,
                        state.stamp, step=state.step, skipped=state.skipped,
                        scaler=state.amp.state_dict())
        session.report(metrics, checkpoint_dir)


def _finished(training: TrainingSpec, state: TrainState) -> bool:
    """Whether the trial has trained its budget: ``training.steps`` steps, else ``training.epochs`` epochs."""
    return state.step >= training.steps if training.steps is not None else state.epoch >= training.epochs


def _snapshot(config: TrialConfig, state: TrainState) -> None:
    """Adds the reconstructions of the fixed validation rows at this epoch to ``state.snapshots``
    (and the rows, once), when this epoch is a snapshot epoch or the last, and the model can reconstruct."""
    rows, last = state.snapshot_rows, _finished(config.training, state)
    if rows is None or config.snapshot_samples <= 0 or not supports(state.core, "reconstruct"):
        return
    if config.snapshot_epochs is not None and state.epoch not in config.snapshot_epochs and not last:
        return
    if "inputs" not in state.snapshots:
        for name, value in rows.items():
            state.snapshots["inputs" if name == "image" else f"column_{name}"] = value.cpu().numpy()
    recon = state.core.reconstruct(rows)
    state.snapshots[f"epoch_{state.epoch:04d}"] = recon.float().cpu().numpy().astype(np.float16)
    if supports(state.core, "predict"):
        for name, value in state.core.predict(rows).items():
            state.snapshots[f"epoch_{state.epoch:04d}_{name}"] = value.float().cpu().numpy()


def _first_rows(shard: Shard, num: int, batch_size: int) -> dict[str, np.ndarray]:
    """Up to ``num`` rows of ``shard`` by column (``image`` as float32 ``(num, ...)``)."""
    parts, total = [], 0
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        parts.append(batch)
        total += len(batch["image"])
        if total >= num:
            break
    rows = {name: np.concatenate([np.asarray(part[name]) for part in parts])[:num] for name in parts[0]}
    rows["image"] = rows["image"].astype(np.float32, copy=False)
    return rows


def _held_out(shard: Shard, batch_size: int) -> HeldOut:
    """``held_out(num, column="image")``: a column of up to ``num`` validation rows of ``shard``
    (every column read in one pass, on first use, and cached: the columns hold the same rows)."""
    cache: dict[int, dict[str, np.ndarray]] = {}

    def held_out(num: int, column: str = "image") -> np.ndarray:
        if num not in cache:
            cache[num] = _first_rows(shard, num, batch_size)
        return cache[num][column]

    return held_out


def _optimizer(training: TrainingSpec, params) -> torch.optim.Optimizer:
    """The optimizer ``training.optimizer`` at ``training.lr`` over ``params``."""
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return optimizers[training.optimizer](params, lr=training.lr)


def _run_epoch(model: torch.nn.Module, shard: Shard, batch_size: int, device: torch.device,
               optimizers: list[torch.optim.Optimizer] | None, keep_first: int = 0, amp: Amp | None = None,
               max_steps: int | None = None) -> EpochResult:
    """One pass over ``shard``; trains when ``optimizers`` are given (until ``max_steps`` steps are taken).

    Loss terms accumulate on the device (float64, weighted by rows) and come to the host in one
    transfer at the end of the pass: the pass syncs the host once, not once per batch. Steps are
    counted by ``amp`` (:class:`~trainables.precision.Amp`: fp16 steps the loss scaler skipped are
    not taken), on the host without a sync of its own.

    Raises:
        RuntimeError: If the shard yields no rows.
    """
    amp = amp or Amp()
    sums: dict[str, torch.Tensor] = {}
    collected: dict[str, list[torch.Tensor]] = {}
    first = None
    seen = 0
    taken, skipped = amp.taken, amp.skipped
    for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=torch.float32, device=device):
        if max_steps is not None and amp.taken - taken >= max_steps:
            break
        if optimizers is not None:
            terms = _train_step(model, batch, optimizers, amp)
        else:  # only evaluation passes score predictions; training ones would copy them for nothing
            terms = _eval_step(model, batch, amp, collected)
            if keep_first and first is None:
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
    predictions = {name: torch.cat(parts).float().cpu() for name, parts in collected.items()}
    return EpochResult({name: total / seen for name, total in zip(names, totals)}, seen, amp.taken - taken,
                       amp.skipped - skipped, predictions, first)


def _train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], optimizers: list[torch.optim.Optimizer],
                amp: Amp) -> dict[str, torch.Tensor]:
    """One optimisation step on ``batch``: the family's ``training_step``, else ``model(batch).loss``
    minimised by ``optimizers[0]``. Returns the batch's scalar terms (on the device)."""
    core = unwrap(model)
    if supports(core, "training_step"):
        with amp.autocast():
            terms = core.training_step(batch, optimizers, amp)
    else:
        with amp.autocast():
            out = model(batch)
        optimizers[0].zero_grad(set_to_none=True)
        amp.backward(out.loss)
        amp.step(optimizers[0])
        terms = out.terms()
    amp.update()
    return terms


def _eval_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], amp: Amp,
               collected: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The forward pass of ``batch`` in the model's current mode; appends its predictions to ``collected``."""
    with amp.autocast():
        out = model(batch)
    for name, value in out.predictions.items():
        collected.setdefault(name, []).append(value.detach())
    return out.terms()
