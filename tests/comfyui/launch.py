"""Start the ComfyUI of .comfyui/ComfyUI (see install.sh; or of $VARBOOTH_COMFYUI) with a CPU-only torch: argv = ComfyUI's
arguments (torchvision_ops.py: why torchvision's operators are declared first).
"""
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchvision_ops  # noqa: E402

torchvision_ops.declare()

# VARBOOTH_COMFYUI: another ComfyUI folder using the same venv (the Manager test installs the pack into a copy)
COMFY = os.environ.get("VARBOOTH_COMFYUI") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                           ".comfyui", "ComfyUI")
COMFY = os.path.abspath(COMFY)
sys.path.insert(0, COMFY)
os.chdir(COMFY)
sys.argv = [os.path.join(COMFY, "main.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
