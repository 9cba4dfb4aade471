"""Thin ComfyUI adapters over var_core (V3 schema API). The nodes arrive with the ComfyUI issue."""
from comfy_api.latest import ComfyExtension, io


class VARBoothExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return []
