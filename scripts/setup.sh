#!/usr/bin/env bash
# Turn a fresh clone into a working install in ./.venv, in one command.
#
#   scripts/setup.sh
#
# torch is installed first and pinned: with no torch present, pip resolves a
# plain "torch" requirement to the newest CUDA build (several GB). On a machine
# without an NVIDIA GPU we ask for the CPU build of 2.13.0 instead. Set
# ARTBOT_TORCH_SPEC to install another build (for example "torch==2.13.0" on a
# CUDA machine, where PyPI's default build is the CUDA one) and
# ARTBOT_TORCH_INDEX to an extra package index that holds it.
#
# Everything else is installed at the exact versions in constraints.txt, the
# set the tests last passed with; scripts/lock.sh regenerates it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "artbot needs Python 3.11 or newer"'

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip

TORCH_SPEC=${ARTBOT_TORCH_SPEC:-torch==2.13.0}
pip_args=(--quiet)
if [ -n "${ARTBOT_TORCH_INDEX:-}" ]; then
    pip_args+=(--extra-index-url "$ARTBOT_TORCH_INDEX")
fi
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC"
    # -c: torch's own dependencies (sympy, networkx, ...) get their pinned versions.
    .venv/bin/python -m pip install "${pip_args[@]}" -c constraints.txt "$TORCH_SPEC"
fi

echo "setup: installing artbot and its dependencies (versions from constraints.txt)"
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[test]'
# Upscaler networks (the "upscale" extra): spandrel without its torchvision requirement,
# which on PyPI is a CUDA build that breaks beside a CPU torch; generators.upscale runs
# spandrel without torchvision.
.venv/bin/python -m pip install --quiet -c constraints.txt --no-deps spandrel einops
.venv/bin/artbot --version
echo "setup: done. Try: .venv/bin/artbot --help"
