"""torchvision 0.28 from PyPI is built against CUDA torch; declaring its two operator schemas before it is imported
lets its pure-Python parts load beside CPU torch (ComfyUI imports it at start-up; only its C++ ops would fail, and none
is used). For the scripts that run with ComfyUI's Python: launch.py (the server) and make_sd15.py."""
import torch

_lib = None


def declare() -> None:
    global _lib
    if _lib is None:
        _lib = torch.library.Library("torchvision", "DEF")
        _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
