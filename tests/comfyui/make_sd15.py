"""Write a random checkpoint in Stable Diffusion 1.5's layout, which ComfyUI's Load Checkpoint detects as SD1.5: a
one-level UNet with SD1.5's width (320) and text width (768), and SD1.5's own CLIP-L and VAE architectures, all built
from ComfyUI's model classes; fp16, about 0.45 GB. Run with ComfyUI's Python (tests/comfyui/install.sh):

    python tests/comfyui/make_sd15.py OUT.safetensors [EMPTY_LORA.safetensors]

The second file, if given, is an empty LoRA (no tensors): a stand-in for a user's DreamBooth LoRA.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.environ.get("VARBOOTH_COMFYUI") or os.path.join(HERE, "..", "..", ".comfyui", "ComfyUI"))
import torchvision_ops  # noqa: E402

torchvision_ops.declare()
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True
import comfy.ops  # noqa: E402
import comfy.sd1_clip  # noqa: E402
from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402


def random_(module: torch.nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in module.state_dict().items():
        if t.is_floating_point():
            t = torch.randn(t.shape, generator=g) * (0.02 if t.dim() > 1 else 0.1) + (1.0 if "norm" in name and
                                                                                     name.endswith("weight") else 0.0)
        out[name] = t.to(torch.float16) if t.is_floating_point() else t
    return out


def main(out: str, lora: str | None = None) -> None:
    ops = comfy.ops.disable_weight_init
    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
                     channel_mult=(1,), num_heads=8, context_dim=768, use_linear_in_transformer=False,
                     transformer_depth=[1], transformer_depth_middle=1, transformer_depth_output=[1, 1],
                     use_spatial_transformer=True, legacy=False, device="cpu", operations=ops)
    clip = comfy.sd1_clip.SDClipModel(device="cpu")
    vae = AutoencoderKL(ddconfig={"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                  "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                  "attn_resolutions": [], "dropout": 0.0}, embed_dim=4)
    sd = {}
    for prefix, module, seed in (("model.diffusion_model.", unet, 0), ("cond_stage_model.", clip, 1),
                                 ("first_stage_model.", vae, 2)):
        sd.update({prefix + k: v.contiguous() for k, v in random_(module, seed).items()})
    save_file(sd, out)
    if lora:
        save_file({}, lora)


if __name__ == "__main__":
    main(*sys.argv[1:])
