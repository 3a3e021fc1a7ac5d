#!/usr/bin/env bash
# Set up the official Tune-A-Video code for benchmarks/bench_steps.py, from a copy you already have.
#
#   bash benchmarks/setup_official.sh SOURCE [DEST] [VENV]
#
# SOURCE: a checkout of showlab/Tune-A-Video (a folder holding tuneavideo/), or a bare git
#         directory of it (its HEAD is extracted with `git archive`). Nothing is downloaded from
#         GitHub here; get the source any way you like and point this script at it.
# DEST:   where the official package is put (default /tmp/tav_official); pass it to
#         bench_steps.py as --official-src.
# VENV:   the official code's own virtual environment (default /tmp/venv_official); pass
#         VENV/bin/python to bench_steps.py as --official-python.
#
# The official code needs diffusers 0.11.1 (it imports diffusers.modeling_utils and CrossAttention,
# both gone in later releases) and a transformers of its time. torch is pinned to the project's
# version so both sides run the same kernels. No file of the official code is patched: on
# torch 2.14.1 it imports and runs as shipped (torch.utils.checkpoint only warns that
# use_reentrant is not passed, and keeps the reentrant variant its authors ran).
set -euo pipefail

SOURCE=${1:?usage: setup_official.sh SOURCE [DEST] [VENV]}
DEST=${2:-/tmp/tav_official}
VENV=${3:-/tmp/venv_official}
PYTHON=${PYTHON:-python3.11}

mkdir -p "$DEST"
if [ -d "$SOURCE/tuneavideo" ]; then
    cp -r "$SOURCE/tuneavideo" "$DEST/"
    [ -f "$SOURCE/train_tuneavideo.py" ] && cp "$SOURCE/train_tuneavideo.py" "$DEST/"
elif git --git-dir="$SOURCE" rev-parse --verify HEAD >/dev/null 2>&1; then
    git --git-dir="$SOURCE" archive HEAD tuneavideo train_tuneavideo.py | tar -x -C "$DEST"
    git --git-dir="$SOURCE" log -1 --format='official commit %H (%cd)' > "$DEST/COMMIT"
else
    echo "error: $SOURCE holds neither tuneavideo/ nor a git repository" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# torch first and pinned: an unpinned torch would pull a different (multi-GB) build.
"$VENV/bin/pip" install -q torch==2.14.1
"$VENV/bin/pip" install -q diffusers==0.11.1 transformers==4.26.1 huggingface_hub==0.13.4 einops

cd "$DEST"
"$VENV/bin/python" -W ignore -c "
import torch, diffusers, transformers
from tuneavideo.models.unet import UNet3DConditionModel
print('official code imports: torch', torch.__version__, 'diffusers', diffusers.__version__,
      'transformers', transformers.__version__)
"
echo "ready: --official-src $DEST --official-python $VENV/bin/python"
