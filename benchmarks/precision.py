"""Speed of one training step of the main job's conv VAE under each precision and memory format.

The model is ``configs/beta_sweep.yaml``'s family (conv_vae, latent 10, filters [32, 32, 64, 64],
hidden 256) on batches of 64 images of the shipped dSprites grid, one torch thread, on the CPU
(or ``--device cuda``). One step is what the loop does per batch: the forward pass under the
precision's autocast, ``zero_grad``, backward, Adam step. Four variants: ``fp32``, ``bf16``
(autocast to bfloat16), and each with ``channels_last`` (the model's parameters and the input
batch in NHWC memory format). The variants are timed in turn within each repeat, so a load that
comes and goes on a shared machine falls on all of them alike; the figure of a variant is the
median over repeats of its images/s, and a ratio is the median over repeats of the two variants'
ratio within a repeat (paired, so that the load cancels).

    python benchmarks/precision.py                    # 7 repeats of 20 steps (after 5 warm-up steps)
    python benchmarks/precision.py --repeats 11 --steps 40 --threads 2

Last line: ``bf16_over_fp32=<ratio> channels_last_fp32=<ratio> channels_last_bf16=<ratio>
bf16_channels_last_over_fp32=<ratio>`` (channels_last ratios are over the same precision without it).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from analysis.cli import ArgumentParser, int_in  # noqa: E402
from datasets.dsprites import GRID_PATH, load_dsprites  # noqa: E402
from study.spec import load_spec  # noqa: E402
from trainables.precision import Amp  # noqa: E402
from trainables.registry import get_family

CONFIG = REPO / "configs" / "beta_sweep.yaml"
VARIANTS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def build(precision: str, channels_last: bool, device: torch.device, batch_size: int):
    """A fresh model of the main job's family, its Adam, its :class:`Amp` and a batch ``{"image": (B, 1, 64, 64)}``."""
    spec = load_spec(CONFIG)
    family = get_family(spec.family["name"])
    torch.manual_seed(0)
    model = family.model_cls(spec.family_config(family.name), (1, 64, 64)).to(device)
    images = torch.as_tensor(load_dsprites(GRID_PATH).images[:batch_size], dtype=torch.float32, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.training.lr)
    return model, optimizer, Amp(precision, device), {"image": images}


def step(model, optimizer, amp: Amp, batch) -> None:
    """One optimisation step as the loop takes it."""
    with amp.autocast():
        out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    amp.backward(out.loss)
    amp.step(optimizer)
    amp.update()


def images_per_s(setup, steps: int, device: torch.device) -> float:
    """Images per second over ``steps`` steps of ``setup`` (model, optimizer, amp, batch)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(*setup)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(setup[3]["image"]) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int_in(1, 1000), default=7)
    parser.add_argument("--steps", type=int_in(1, 100_000), default=20)
    parser.add_argument("--warmup", type=int_in(0, 100_000), default=5)
    parser.add_argument("--batch-size", type=int_in(1, 65_536), default=64)
    parser.add_argument("--threads", type=int_in(1, 1024), default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} thread(s), batch {args.batch_size}, device {device}", flush=True)
    setups = {variant: build(*variant, device, args.batch_size) for variant in VARIANTS}
    for setup in setups.values():
        for _ in range(args.warmup):
            step(*setup)
    rates: dict[tuple[str, bool], list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.repeats):
        for variant, setup in setups.items():  # in turn: a passing load falls on every variant
            rates[variant].append(images_per_s(setup, args.steps, device))
    median = {variant: statistics.median(values) for variant, values in rates.items()}

    def ratio(top: tuple[str, bool], bottom: tuple[str, bool]) -> float:
        return statistics.median(a / b for a, b in zip(rates[top], rates[bottom]))

    for (precision, channels_last), value in median.items():
        spread = f"{min(rates[precision, channels_last]):,.0f}-{max(rates[precision, channels_last]):,.0f}"
        name = precision + ("+channels_last" if channels_last else "")
        print(f"{name:20s} {value:8,.0f} images/s (median of {args.repeats}; range {spread})")
    print(f"bf16_over_fp32={ratio(('bf16', False), ('fp32', False)):.2f} "
          f"channels_last_fp32={ratio(('fp32', True), ('fp32', False)):.2f} "
          f"channels_last_bf16={ratio(('bf16', True), ('bf16', False)):.2f} "
          f"bf16_channels_last_over_fp32={ratio(('bf16', True), ('fp32', False)):.2f}")


if __name__ == "__main__":
    main()
