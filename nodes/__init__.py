"""Thin ComfyUI adapters over var_core (V3 schema API): Infinity's loaders, text, sampling, schedule, training,
subjects; Switti's and the class-conditional VAR's loaders, samplers and subjects."""
from comfy_api.latest import ComfyExtension, io

from . import comfy_env, loaders, proxy, sampling, schedule, subjects, switti, text, training, var

comfy_env.register_folders()
NODES = [*loaders.NODES, *text.NODES, *sampling.NODES, *schedule.NODES, *training.NODES, *subjects.NODES, *proxy.NODES,
         *switti.NODES, *var.NODES]


class VARBoothExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES
