"""ComfyUI entry point of the VARBooth node pack.

ComfyUI imports this file at start-up; it must stay cheap and must never break ComfyUI or other packs, so the nodes
(and torch-heavy var_core) are imported only when ComfyUI asks for the extension, and an import failure is logged
with what to do instead of raised.
"""
import logging
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
WEB_DIRECTORY = "./web"  # a small frontend extension: shows the text the nodes return on the nodes themselves


async def comfy_entrypoint():
    if _HERE not in sys.path:  # var_core is imported by name (as by the CLI and the tests)
        sys.path.insert(0, _HERE)
    try:
        from .nodes import VARBoothExtension
    except Exception as e:  # noqa: BLE001 - whatever failed, ComfyUI must keep running
        logging.error("[VARBooth] the node pack could not be loaded: %s: %s. Install its requirements with "
                      "ComfyUI's Python: python -m pip install -r %s", type(e).__name__, e,
                      os.path.join(_HERE, "requirements.txt"))
        from comfy_api.latest import ComfyExtension

        class Unavailable(ComfyExtension):
            async def get_node_list(self):
                return []
        return Unavailable()
    return VARBoothExtension()
