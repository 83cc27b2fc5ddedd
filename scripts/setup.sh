#!/usr/bin/env bash
# Create (or reuse) a virtualenv and install vae-study into it.
#
#   bash scripts/setup.sh            # .venv, torch==2.13.0 if no torch is installed, then the project + test extras
#   VENV=/path/env bash scripts/setup.sh
#   TORCH_SPEC="torch==2.5.1" TORCH_INDEX_URL=https://download.pytorch.org/whl/cu121 bash scripts/setup.sh
#
# torch is installed first and only when the environment has none: an unpinned torch pulls
# gigabytes of CUDA packages, and a torch you installed yourself is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "setup: installing $TORCH_SPEC"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    "$PY" -m pip install -q "$TORCH_SPEC"
  fi
fi
echo "setup: installing vae-study and its dependencies"
"$PY" -m pip install -q -e ".[test]"
"$PY" -c "import ray, torch, optuna, study.run" >/dev/null
echo "setup: done ($("$PY" -c 'import torch, ray; print(f"torch {torch.__version__}, ray {ray.__version__}")')); activate with: source $VENV/bin/activate"
