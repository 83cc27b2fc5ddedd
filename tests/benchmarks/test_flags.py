"""Every benchmark refuses a bad flag as the command lines do: exit code 2, one ``error:`` line, no traceback.

One Python process per benchmark keeps this fast: it loads the script once, calls its ``main(argv)``
with each bad command line (stderr captured per call, ``SystemExit`` caught), then runs the script
as ``__main__`` with the first bad command line, so that the process itself shows the real exit code
and stderr. No case may reach the benchmark's work: each is refused while the flags are read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

TIMEOUT_S = 300  # six imports of torch, Ray Data, sklearn on a loaded 2-core machine

RUNNER = r"""
import contextlib, io, json, runpy, sys
script, cases = sys.argv[1], json.loads(sys.argv[2])
module = runpy.run_path(script, run_name="benchmark_flags")
results = []
for argv in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = module["main"](argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = f"raised {type(exc).__name__}: {exc}"
    results.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(results), flush=True)
sys.argv = [script, *cases[0]]
runpy.run_path(script, run_name="__main__")
raise SystemExit(0)  # main returned instead of refusing: the test reads exit code 0
"""

# benchmark -> [(argv, fragments of the error line)]; "{tmp}" is a scratch folder with "a_file" (text) in it.
CASES: dict[str, list[tuple[list[str], list[str]]]] = {
    "metrics.py": [
        (["--data", "{tmp}/missing.npz"], ["argument --data:", "missing.npz: no such file"]),
        (["--data", "{tmp}/a_file"], ["a_file", "not a readable .npz"]),
        (["--seed", "-1"], ["argument --seed:", "expected an integer >= 0", "'-1'"]),
        (["--seed", "x"], ["argument --seed:"]),
        (["--smoke-test", "--nope"], ["unrecognized arguments: --nope"]),
    ],
    "placement.py": [
        (["--epochs", "0"], ["argument --epochs:", "expected an integer in [1, 100000]", "'0'"]),
        (["--batch-size", "0"], ["argument --batch-size:", "'0'"]),
        (["--epochs", "two"], ["argument --epochs:", "'two'"]),
    ],
    "overhead.py": [
        (["--pairs", "0"], ["argument --pairs:", "'0'"]),
        (["--trials", "7"], ["argument --trials:", "in [1, 6]", "'7'"]),
        (["--epochs", "0"], ["argument --epochs:", "'0'"]),
        (["--limit", "1"], ["argument --limit:", "'1'"]),
        (["--limit", "3"], ["--limit 3:", "empty train or val split"]),
        (["--num-train", "0"], ["argument --num-train:", "'0'"]),
        (["--modes", "auto,fast"], ["argument --modes:", "auto, torch_trainer", "'fast'"]),
        (["--modes", ""], ["argument --modes:"]),
        (["--storage", "{tmp}/a_file"], ["argument --storage:", "is a file"]),
    ],
    "gpu.py": [
        (["--steps", "0"], ["argument --steps:", "'0'"]),
        (["--variant", "huge"], ["argument --variant:", "'huge'"]),
        (["--ks", "1,9"], ["argument --ks:", "'9'", "in [1, 8]"]),
        (["--ks", "a"], ["argument --ks:", "'a'"]),
        (["--precisions", "fp32,fp8"], ["argument --precisions:", "'fp8'"]),
    ],
    "search_efficiency.py": [
        (["--seeds", "0"], ["argument --seeds:", "'0'"]),
        (["--trials", "-3"], ["argument --trials:", "'-3'"]),
        (["--curves", "{tmp}"], ["argument --curves:", "a directory"]),
        (["--curves", "{tmp}/a_file"], ["argument --curves:", "a_file", "not a curves file"]),
        (["--curves", "{tmp}/absent/c.json"], ["argument --curves:", "no such folder"]),
    ],
    "scale.py": [
        (["--sizes", "0"], ["argument --sizes:", "'0'"]),
        (["--sizes", "10", "x"], ["argument --sizes:", "'x'"]),
        (["--workdir", "{tmp}/a_file"], ["argument --workdir:", "is a file"]),
    ],
    "precision.py": [
        (["--repeats", "0"], ["argument --repeats:", "'0'"]),
        (["--device", "tpu"], ["argument --device:", "'tpu'"]),
        (["--threads", "-1"], ["argument --threads:", "'-1'"]),
    ],
    "data_path.py": [
        (["--epochs", "0"], ["--epochs:", "'0'"]),
        (["--epochs", "x"], ["--epochs:", "'x'"]),
        (["--sizes-gb", "0"], ["--sizes-gb:", "'0'"]),
        (["--image-size", "2"], ["--image-size:", "'2'"]),
        (["--sample-s", "-1"], ["--sample-s:", "'-1'"]),
        (["--workdir", "{tmp}/a_file"], ["argument --workdir:", "is a file"]),
        (["--throughput-file", "{tmp}/missing.h5"], ["argument --throughput-file:", "no such file"]),
        (["--uri", "bucket/prefix"], ["--uri:", "s3://"]),
        (["--image-mode", "stretch"], ["argument --image-mode:", "'stretch'"]),
    ],
}


def test_every_benchmark_is_covered():
    assert sorted(CASES) == sorted(p.name for p in (REPO / "benchmarks").glob("*.py"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    """benchmark -> (per-case results, the process), each benchmark run once, lazily."""
    tmp = tmp_path_factory.mktemp("flags")
    (tmp / "a_file").write_text("not what the flag wants\n")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "VAE_STUDY_CACHE": str(tmp / "cache")}
    env.pop("DSPRITES_DOWNSAMPLED", None)
    cache: dict = {}

    def run(name: str):
        if name not in cache:
            cases = [[arg.replace("{tmp}", str(tmp)) for arg in argv] for argv, _ in CASES[name]]
            proc = subprocess.run([sys.executable, "-c", RUNNER, str(REPO / "benchmarks" / name), json.dumps(cases)],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
            lines = proc.stdout.splitlines()
            assert lines, proc.stderr[-3000:]
            cache[name] = (json.loads(lines[0]), proc)
        return cache[name]

    return run


def assert_one_line(code, stderr: str, fragments: list[str]) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == 2, (code, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


@pytest.mark.parametrize("name, index", [(name, i) for name, cases in CASES.items() for i in range(len(cases))],
                         ids=[f"{name}:{' '.join(argv)}" for name, cases in CASES.items() for argv, _ in cases])
def test_a_bad_flag_is_refused_in_one_line(outcomes, name, index):
    results, _ = outcomes(name)
    result = results[index]
    assert_one_line(result["code"], result["stderr"], CASES[name][index][1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_process_exits_2_with_one_line(outcomes, name):
    _, proc = outcomes(name)
    assert_one_line(proc.returncode, proc.stderr, CASES[name][0][1])
