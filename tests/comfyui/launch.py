"""Start the ComfyUI of .comfyui/ComfyUI (see install.sh; or of $VARBOOTH_COMFYUI) with a CPU-only torch: argv = ComfyUI's arguments.

torchvision 0.28 from PyPI is built against CUDA torch; declaring its two operator schemas first lets its pure-Python
parts import beside CPU torch (ComfyUI imports it at start-up; only its C++ ops would fail, and none is used).
"""
import os
import runpy
import sys

import torch

_lib = torch.library.Library("torchvision", "DEF")
_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

# VARBOOTH_COMFYUI: another ComfyUI folder using the same venv (the Manager test installs the pack into a copy)
COMFY = os.environ.get("VARBOOTH_COMFYUI") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                           ".comfyui", "ComfyUI")
COMFY = os.path.abspath(COMFY)
sys.path.insert(0, COMFY)
os.chdir(COMFY)
sys.argv = [os.path.join(COMFY, "main.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
