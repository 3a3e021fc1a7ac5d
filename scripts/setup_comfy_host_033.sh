#!/usr/bin/env bash
# Set up a ComfyUI 0.33.0 host for running the e2e suite by hand (CI stays on 0.3.75).
#
# Needs: a git mirror of a public ComfyUI repository whose HEAD is 0.33.0 (e.g. yzkee/ComfyUI),
#        python3.11, and a venv that already holds torch==2.14.1 + torchvision==0.29.1 (the
#        project's own .venv). Nothing of ComfyUI is copied into this repository.
# Does:  exports the mirror's HEAD tree into $COMFY_DIR, skipping blobs the mirror lacks (the
#        stored copy misses two tokenizer files this pack never uses); makes a python3.11 venv
#        whose .pth reaches the torch venv's site-packages; installs ComfyUI's requirements minus
#        torch/torchvision/torchaudio, torchaudio --no-deps (the audio VAE imports it at start),
#        and the e2e test client's deps; links this pack into custom_nodes/.
# Env:   MIRROR (default /work/.mirror/yzkee+ComfyUI/repo), COMFY_DIR (default
#        /work/hosts/comfy-0.33), VENV (default /work/hosts/venv-0.33), TORCH_VENV (default
#        <repo>/.venv).
# Then:  HF_HUB_OFFLINE=1 TAV_COMFY_DIR=$COMFY_DIR TAV_COMFY_PYTHON=$VENV/bin/python \
#          python -m pytest tests/e2e -q        (see docs/compatibility.md)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIRROR="${MIRROR:-/work/.mirror/yzkee+ComfyUI/repo}"
COMFY_DIR="${COMFY_DIR:-/work/hosts/comfy-0.33}"
VENV="${VENV:-/work/hosts/venv-0.33}"
TORCH_VENV="${TORCH_VENV:-$ROOT/.venv}"
PACK_NAME="comfyui-tuneavideo"
TORCHAUDIO_VERSION="2.11.1"

TORCH_SITE="$(ls -d "$TORCH_VENV"/lib/python3.11/site-packages)"
[ -d "$TORCH_SITE/torch" ] || { echo "no torch in $TORCH_SITE" >&2; exit 1; }

# 1. Export HEAD's tree, minus the blobs the mirror does not hold.
if [ ! -f "$COMFY_DIR/main.py" ]; then
  mkdir -p "$COMFY_DIR"
  TREE="$(mktemp)"
  LIST="$(mktemp)"
  # ls-tree -z: "<mode> blob <sha>\t<path>\0"; cat-file --batch-check prints "<sha> missing".
  git -C "$MIRROR" ls-tree -r -z HEAD > "$TREE"
  "$TORCH_VENV/bin/python" - "$MIRROR" "$TREE" "$LIST" <<'EOF'
import subprocess, sys
mirror, tree, out = sys.argv[1], sys.argv[2], sys.argv[3]
entries = [e for e in open(tree, "rb").read().split(b"\0") if e]
blobs = []
for entry in entries:
    meta, path = entry.split(b"\t", 1)
    mode, kind, sha = meta.split()
    if kind == b"blob":
        blobs.append((sha, path))
check = subprocess.run(["git", "-C", mirror, "cat-file", "--batch-check"],
                       input=b"".join(sha + b"\n" for sha, _ in blobs),
                       capture_output=True, check=True).stdout.splitlines()
keep = [path for (sha, path), line in zip(blobs, check) if not line.endswith(b" missing")]
for (sha, path), line in zip(blobs, check):
    if line.endswith(b" missing"):
        print("skipping missing blob:", path.decode(), file=sys.stderr)
with open(out, "wb") as fh:
    fh.write(b"\0".join(keep))
EOF
  xargs -0 -a "$LIST" git -C "$MIRROR" archive --format=tar HEAD -- | tar -x -C "$COMFY_DIR"
  rm -f "$TREE" "$LIST"
fi

# 2. Python 3.11 venv that borrows torch/torchvision from the torch venv.
if [ ! -x "$VENV/bin/python" ]; then
  python3.11 -m venv "$VENV"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$TORCH_SITE" > "$SITE/tav_torch_venv.pth"
REQ="$(mktemp)"
grep -v -E '^(torch|torchvision|torchaudio)[[:space:]]*$' "$COMFY_DIR/requirements.txt" > "$REQ"
"$VENV/bin/python" -m pip install -q -r "$REQ" requests websocket-client psutil pytest
"$VENV/bin/python" -m pip install -q --no-deps "torchaudio==$TORCHAUDIO_VERSION"
rm -f "$REQ"

# 3. Link the pack into custom_nodes/.
ln -sfn "$ROOT" "$COMFY_DIR/custom_nodes/$PACK_NAME"

"$VENV/bin/python" -c "import torch, comfy_aimdo; print('torch', torch.__version__)"
echo "ComfyUI 0.33 host ready: $COMFY_DIR (python $VENV/bin/python)"
echo "boot check: (cd $COMFY_DIR && $VENV/bin/python main.py --cpu --listen 127.0.0.1 --port 8299)"
