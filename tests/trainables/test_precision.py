"""Mixed precision: the fp16 refusal on the CPU, and the count of optimisation steps taken and skipped."""

from __future__ import annotations

import pytest
import torch

from trainables.precision import Amp, resolve_precision

# A gradient of 3e38 is finite in float32 (max 3.4e38), but not once scaled by 2 or more: the fp16
# scaler, starting at 2**16 and halving at each overflow, skips exactly 16 steps (2**16 .. 2**1)
# and applies the 17th (scale 1).
HUGE_GRADIENT = 3e38


def one_step(amp: Amp, weight: torch.nn.Parameter, optimizer: torch.optim.Optimizer, gradient: float) -> bool:
    """One batch whose loss ``weight.sum() * gradient`` has d(loss)/d(weight) = ``gradient``."""
    optimizer.zero_grad(set_to_none=True)
    amp.backward((weight * gradient).sum())
    amp.step(optimizer)
    return amp.update()


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_fp16_is_refused_on_the_cpu_naming_the_field(device):
    with pytest.raises(ValueError, match=r"^training\.precision: this trial trains on the CPU, but fp16 trains on "
                                         r"CUDA GPUs only"):
        resolve_precision("fp16", device)
    with pytest.raises(ValueError, match="training.precision"):
        Amp("fp16", device)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="training.precision: expected one of"):
        Amp("fp8", "cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fp32_and_bf16_take_every_step(precision):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    amp = Amp(precision, "cpu")
    assert [one_step(amp, weight, optimizer, 1.0) for _ in range(5)] == [True] * 5
    assert (amp.taken, amp.skipped) == (5, 0)
    torch.testing.assert_close(weight.detach(), torch.full((3,), 0.5))  # 5 steps of 0.1


def test_fp16_steps_whose_gradients_overflow_are_skipped_and_not_counted(fp16_on_cpu):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=1e-38)
    amp = Amp("fp16", "cpu")
    taken = [one_step(amp, weight, optimizer, HUGE_GRADIENT) for _ in range(16)]
    assert taken == [False] * 16 and (amp.taken, amp.skipped) == (0, 16)
    assert torch.equal(weight.detach(), torch.ones(3))  # nothing applied
    assert amp.scaler.get_scale() == 1.0
    assert one_step(amp, weight, optimizer, HUGE_GRADIENT)
    assert (amp.taken, amp.skipped) == (1, 16)
    torch.testing.assert_close(weight.detach(), torch.full((3,), 1 - 3.0))  # one step: 1 - 1e-38 * 3e38


def test_a_batch_counts_as_skipped_when_any_of_its_optimizers_is(fp16_on_cpu):
    """A family with two optimizers (a GAN): the batch is taken only when both steps were applied."""
    first, second = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    optimizers = [torch.optim.SGD([first], lr=0.1), torch.optim.SGD([second], lr=0.1)]
    amp = Amp("fp16", "cpu")
    for optimizer, (weight, gradient) in zip(optimizers, [(first, 1.0), (second, HUGE_GRADIENT)]):
        optimizer.zero_grad(set_to_none=True)
        amp.backward(weight.sum() * gradient)
        amp.step(optimizer)
    assert amp.update() is False and (amp.taken, amp.skipped) == (0, 1)
    assert first.item() < 1.0 and second.item() == 1.0  # the first applied, the second skipped


def test_a_step_counts_once_when_an_optimizer_subclass_calls_its_base_step(fp16_on_cpu):
    """torch runs step hooks in each patched class's step: a subclass whose step calls its base
    class's (seq2seq's clipping optimizers) runs them twice for one step."""

    class Clipped(torch.optim.SGD):
        def step(self, closure=None):
            return super().step(closure)

    torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)  # torch patches SGD.step with its hooks
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = Clipped([weight], lr=0.1)
    amp = Amp("fp16", "cpu")
    assert one_step(amp, weight, optimizer, 1e-6) is True and (amp.taken, amp.skipped) == (1, 0)
    assert (weight < 1.0).all()


@pytest.mark.parametrize("capabilities, expected", [
    ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, "bf16"),
    ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": False, "amx_bf16": True}, "bf16"),
    ({"architecture": "x86_64", "avx512_f": True, "avx512_bw": True, "avx512_bf16": False}, "fp32"),  # emulated
    ({"architecture": "aarch64", "neon": True, "bf16": True}, "bf16"),
    ({"architecture": "aarch64", "neon": True, "bf16": False}, "fp32"),
])
def test_auto_is_bf16_on_a_cpu_with_bf16_in_hardware(monkeypatch, capabilities, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert resolve_precision("auto", "cpu") == expected
    assert Amp("auto", torch.device("cpu")).precision == expected
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize("capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32"),
                                                  ((6, 1), "fp32")])
def test_auto_is_bf16_on_cuda_from_compute_capability_8(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", "cuda") == expected
    assert resolve_precision("fp16", "cuda") == "fp16"  # fp16 stays as asked on a GPU

