"""Docs are code: the site builds without a warning, every Python snippet runs, every name exists.

The snippets (```python blocks of README.md and docs/**/*.md) run against a real study: the
session's smoke study, linked as ``studies/<name>`` for every study name they read, in a temporary
working directory. Bash blocks are not run, but every ``python -m MODULE``, every repository path
(``configs/*.yaml``, ``benchmarks/*.py``, ...) and every relative link they name must exist.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
PACKAGES = ("study", "trainables", "datasets", "analysis")
# The README's test command, which .ci/run runs verbatim.
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest -q"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
_MODULE = re.compile(r"python -m ([A-Za-z_][\w.]*)")
_PATH = re.compile(r"(?<![\w/.<])((?:study|trainables|datasets|analysis|benchmarks|scripts|configs|tests)"
                   r"/[\w/.\-]+\.(?:py|yaml|sh|ipynb|npz))\b")
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
_STUDY = re.compile(r"(?<!s3://)(?<![\w\-]/)studies/([\w\-]+)")
_S3_STUDY = re.compile(r"s3://([\w\-]+)/studies/([\w\-]+)")


def _blocks(language: str) -> list[tuple[str, int, str]]:
    """``(page relative to the repo, index on the page, code)`` of every fenced block in ``language``."""
    found = []
    for page in PAGES:
        blocks = [code for lang, code in _FENCE.findall(page.read_text()) if lang == language]
        found += [(str(page.relative_to(REPO)), i, code) for i, code in enumerate(blocks)]
    return found


SNIPPETS = _blocks("python")


def test_there_are_snippets_to_run():
    assert len(SNIPPETS) >= 4, [s[:2] for s in SNIPPETS]
    assert any(page == "README.md" for page, _, _ in SNIPPETS)


@pytest.fixture(scope="module")
def snippet_dir(smoke_study, tmp_path_factory) -> Path:
    """A working directory whose ``studies/<name>`` links to the smoke study for every name the snippets use."""
    study_dir = smoke_study[0]
    work = tmp_path_factory.mktemp("snippets")
    (work / "studies").mkdir()
    for name in sorted({n for _, _, code in SNIPPETS for n in _STUDY.findall(code)}):
        (work / "studies" / name).symlink_to(study_dir, target_is_directory=True)
    return work


def _in_a_bucket(code: str, study_dir: Path, endpoint: str, monkeypatch, tmp_path: Path) -> None:
    """Copies the smoke study to every ``s3://BUCKET/studies/NAME`` the snippet reads, on the loopback
    S3 server, and points this process's AWS variables at it."""
    import boto3
    import pyarrow.fs as pafs

    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for bucket, name in sorted(set(_S3_STUDY.findall(code))):
        if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=bucket)
        fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}")
        pafs.copy_files(str(study_dir), f"{bucket}/studies/{name}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)


@pytest.mark.slow
@pytest.mark.parametrize("page, index, code", SNIPPETS, ids=[f"{p}[{i}]" for p, i, _ in SNIPPETS])
def test_python_snippet_runs(page, index, code, snippet_dir, smoke_study, s3_server, monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    if _S3_STUDY.search(code):
        _in_a_bucket(code, smoke_study[0], s3_server, monkeypatch, tmp_path)
    monkeypatch.chdir(snippet_dir)
    try:
        exec(compile(code, f"{page}[python block {index}]", "exec"), {"__name__": "__snippet__"})
    finally:
        plt.close("all")


def _named(pattern: re.Pattern) -> set[tuple[str, str]]:
    return {(str(page.relative_to(REPO)), m) for page in PAGES for m in pattern.findall(page.read_text())}


def test_python_m_modules_exist():
    modules = _named(_MODULE)
    assert {"study.run", "analysis.report", "analysis.rescore", "study.results"} <= {m for _, m in modules}
    missing = []
    for page, module in sorted(modules):
        parts = module.rstrip(".").split(".")
        if parts[0] in PACKAGES:
            path = REPO.joinpath(*parts)
            ok = path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()
        else:
            ok = importlib.util.find_spec(parts[0]) is not None
        if not ok:
            missing.append(f"{page}: python -m {module}")
    assert not missing, missing


def test_repository_paths_exist():
    paths = _named(_PATH)
    assert ("README.md", "configs/beta_sweep.yaml") in paths
    missing = [f"{page}: {path}" for page, path in sorted(paths) if not (REPO / path).exists()]
    assert not missing, missing


def test_readme_links_and_figure():
    text = README.read_text()
    targets = _LINK.findall(text)
    assert any(t.endswith(".png") for t in targets)
    missing = [t for t in targets if "://" not in t and not (REPO / t).exists()]
    assert not missing, missing
    for image in (t for t in targets if t.endswith(".png")):
        assert (REPO / image).stat().st_size < 200_000, image


def test_readme_is_short_and_keeps_the_ci_command():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, len(lines)
    assert TEST_COMMAND in lines
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text().splitlines()


def _public_modules() -> set[str]:
    modules = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            if any(part.startswith("_") and part != "__init__" for part in rel.parts):
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            modules.add(".".join(parts))
    return modules


def test_api_reference_covers_every_public_module():
    documented = {m for page in (DOCS / "api").glob("*.md")
                  for m in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), re.M)}
    public = _public_modules()
    assert "study.spec" in public and "analysis.metrics.mig" in public
    assert not public - documented, f"add to docs/api/: {sorted(public - documented)}"
    assert not documented - public, f"not a module: {sorted(documented - public)}"


# Building imports neither Ray nor torch (the API reference is read statically).
_BUILD = ("import sys\n"
          "for name in ('ray', 'torch'):\n"
          "    sys.modules[name] = None\n"
          "from mkdocs.__main__ import cli\n"
          "sys.exit(cli())\n")


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-c", _BUILD, "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "WARNING" not in output, output[-4000:]
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    api = (site / "api" / "analysis" / "index.html").read_text()
    assert "variance_table" in api and "random_state" in api
