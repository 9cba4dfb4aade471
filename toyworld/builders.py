"""Builders for the tests (and the training benchmark): tiny random models made on the spot, and stand-in photos.

The random models have the real architectures (scaled down) and the released checkpoint layouts, so every loader,
the sampler and the CLI run end-to-end in milliseconds; their images are structured noise.
"""
from __future__ import annotations

from pathlib import Path

import torch

from toyworld.t5 import make_t5
from var_core.infinity.bitvae import BitVAE, BitVAEConfig
from var_core.checkpoint import save_safetensors_atomic
from var_core.infinity.model import PATCHIFIED_VAE_BITS, Infinity, InfinityConfig

TOY_TEXT_WIDTH = 32
TOY_TRANSFORMER = InfinityConfig(depth=4, embed_dim=128, num_heads=2, block_chunks=2, ffn_hidden=512, bits=16,
                                 text_channels=TOY_TEXT_WIDTH, text_maxlen=64, text_pool_heads=1)
TOY_VAE = BitVAEConfig(d=16, base_ch=32)
# Infinity-8B-shaped: an f8 VAE of d bits per latent pixel (ch_mult [1,2,4,4]) and a transformer whose tokens are
# 2x2 patches of it (4d bits: spatial patchify, read from the token width).
TOY_8B_VAE = BitVAEConfig(d=PATCHIFIED_VAE_BITS[0], base_ch=32, ch_mult=(1, 2, 4, 4))
TOY_8B_TRANSFORMER = InfinityConfig(depth=4, embed_dim=128, num_heads=2, block_chunks=2, ffn_hidden=512,
                                    bits=4 * TOY_8B_VAE.d, text_channels=TOY_TEXT_WIDTH, text_maxlen=64,
                                    text_pool_heads=1)


@torch.no_grad()
def randomize_(model: Infinity, seed: int = 0) -> Infinity:
    """Give every parameter a random, well-scaled value (the default init leaves AdaLN and biases at zero, which
    would make parts of the model invisible to tests)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 2 and not name.startswith(("cfg_uncond", "lvl_embed")):
            value = torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5
        else:
            value = torch.randn(p.shape, generator=g) * 0.3
        if name.endswith("scale_mul_1H11"):
            value += 1.4  # ln 4, the trained models' starting point
        p.copy_(value)
    return model


def random_transformer(cfg: InfinityConfig = TOY_TRANSFORMER, seed: int = 0) -> Infinity:
    return randomize_(Infinity(cfg), seed).eval()


def random_vae(cfg: BitVAEConfig = TOY_VAE, seed: int = 0) -> BitVAE:
    torch.manual_seed(seed)
    return BitVAE(cfg).eval()


def make_random_models(folder, seed: int = 0) -> dict[str, Path]:
    """Write a tiny transformer, BitVAE and T5 encoder (with tokenizer) into ``folder``; returns their paths."""
    folder = Path(folder)
    paths = {"transformer": folder / "toy_infinity.safetensors", "vae": folder / "toy_bitvae.safetensors",
             "text_encoder": folder / "toy_t5"}
    if not paths["transformer"].exists():
        save_safetensors_atomic(random_transformer(seed=seed).state_dict(), paths["transformer"])
    if not paths["vae"].exists():
        save_safetensors_atomic(random_vae(seed=seed).state_dict(), paths["vae"])
    if not (paths["text_encoder"] / "config.json").exists():
        make_t5(paths["text_encoder"], d_model=TOY_TEXT_WIDTH, seed=seed)
    return paths


def save_shards(state_dict: dict, folder, shards: int = 2) -> Path:
    """Write a state dict as Infinity-8B is released: model-0000i-of-0000N.safetensors split in state-dict order,
    plus model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map": {key: shard}})."""
    import json
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state_dict)
    per = -(-len(keys) // shards)
    weight_map, total = {}, 0
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state_dict[k].detach().contiguous() for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
        total += sum(t.numel() * t.element_size() for t in part.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return folder


def subject_pictures(n: int = 3, size: int = 256, seed: int = 0) -> torch.Tensor:
    """n pictures (n, 3, size, size) in [-1, 1] of one synthetic "subject" (a two-coloured disc) at different places
    on plain backgrounds: stand-ins for a user's photos."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        cy, cx = (0.3 + 0.4 * torch.rand(2, generator=g)).tolist()
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 0.04).float()
        top = disc * (yy < cy).float()
        background = torch.rand(3, 1, 1, generator=g) * 1.2 - 0.6
        img = background.expand(3, size, size).clone()
        img = img * (1 - disc) + disc * torch.tensor([0.9, 0.5, -0.6])[:, None, None]
        img = img * (1 - top) + top * torch.tensor([-0.8, -0.8, 0.9])[:, None, None]
        out.append(img)
    return torch.stack(out)


def make_trainer(parts, pictures=None, encoder=None, **settings):
    """A SubjectTrainer on ``parts`` (model, vae, text_encoder) over stand-in photos (subject_pictures at the training
    size unless ``pictures`` are given): class word "dog" at 256² unless ``settings`` (TrainConfig's) say otherwise."""
    from var_core.schedules import pixel_size, scale_schedule
    from var_core.tuning import SubjectTrainer, TrainConfig, prepare_images

    model, vae, enc = parts
    config = TrainConfig(**{"class_word": "dog", "pn": "0.06M", **settings})
    size = pixel_size(scale_schedule(config.aspect, config.pn or "0.06M"))
    pictures = list(subject_pictures(2, size[0]) if pictures is None else pictures)
    data = prepare_images(pictures, size, config.token, config.class_word or "x")
    return SubjectTrainer(model, vae, encoder or enc, data, config)


def first_step_gradients(model, vae, encoder, pn: str, scaled: bool = True) -> dict[str, torch.Tensor]:
    """The LoRA delta's gradients of one training step (rank 8, prior distillation on), unscaled; ``scaled=False``:
    without the loss scaling an fp16 base gets."""
    trainer = make_trainer((model, vae, encoder), pn=pn, rank=8, prior_samples=2, gradient_checkpointing=False)
    if not scaled:
        trainer.scaler = None
    trainer._update = lambda: None  # keep the first step's gradients
    trainer.step()
    scale = trainer.scaler.get_scale() if trainer.scaler is not None else 1.0
    return {k: t.grad.detach().float() / scale for k, t in trainer.delta.tensors.items() if t.grad is not None}


def compare_gradients(reference: dict, other: dict) -> tuple[float, float]:
    """(relative L2 error, share of the reference's nonzero entries that are exactly zero in ``other``)."""
    num = sum(float((reference[k] - other[k]).pow(2).sum()) for k in reference)
    den = sum(float(reference[k].pow(2).sum()) for k in reference)
    nonzero = sum(int((reference[k] != 0).sum()) for k in reference)
    lost = sum(int(((reference[k] != 0) & (other[k] == 0)).sum()) for k in reference)
    return (num / den) ** 0.5, lost / nonzero
