"""ComfyUI entry point of the VARBooth node pack.

ComfyUI imports this file at start-up; it must stay cheap and must not fail, so the nodes (and torch-heavy
var_core) are imported only when ComfyUI asks for the extension.
"""


async def comfy_entrypoint():
    from .nodes import VARBoothExtension

    return VARBoothExtension()
