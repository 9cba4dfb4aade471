"""Peak accelerator memory of Switti-1024 (sampling at 1024² with CFG) and of LoRA tuning at 512² (Switti-512's
grid), from an analytic model, and a check of that model against measured runs of scaled-down configs on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/memory_switti.py            # predicted peaks and which options fit
    OMP_NUM_THREADS=1 python benchmarks/memory_switti.py --check    # measure scaled-down runs on the CPU, compare

Release architecture (yresearch/Switti-1024; SwittiHF with depth 30): width 64·30 = 1920, 30 heads of 64, SwiGLU
hidden int(8·1920/3) = 5120, V 4096, Cvae 32, 14 scales (1 … 64, L 9451 tokens), context CLIP-L ‖ bigG (2048 wide,
77 tokens), pooled 1280; the VQ-VAE ch 160, ch_mult 1,1,2,2,4; the text encoders CLIP-L (12 layers, 768) and
OpenCLIP-bigG (32 layers, 1280) as transformers' CLIPTextModel. Like benchmarks/memory.py (Infinity), the model counts
bytes of live tensors (what torch.cuda.max_memory_allocated reports), not the caching allocator's reserve or the CUDA
context (about 0.5-1 GiB more on a GPU). Its parts, one function each below:

* weights: exact, from the architectures built on the meta device: var_core's Switti with cast_blocks (the blocks'
  linear layers in the compute dtype, everything else fp32, load_transformer's layout), var_core's VQVAE, and the
  two CLIPTextModels;
* text path: both encoders on the device while the prompts are encoded (the CLI's `sample` loads them in fp32 and
  drops them before sampling; `train` keeps them, since the placeholder vectors go through them every step);
* sampling: the cross-attention K/V of every block for all rows (computed once per image), Switti-AR's
  self-attention cache, the tensors alive inside one block at the largest scale (read off switti/model.py's op
  order: the self-attention's peak, (4f + 6s)·C per token), and the sampler's logits at that scale: the raw
  logits, the guidance mix, vq/sampling.draw's masked row, its softmax and multinomial's exponential draws
  (4 to 6 tensors of rows·l·V fp32);
* VAE decode: the VAE's weights plus the largest set of activations alive in var_core's Decoder, walked level by
  level (a ResnetBlock holds its input, the norm/SiLU output and conv outputs, 4 tensors of its width; an Upsample
  its input, the 2× copy and the conv's output, 9 input-sizes; the mid AttnBlock two HW × HW matrices);
* training: the tensors autograd saves in one block per token, read off switti/model.py with LoRA on ca + ffn and a
  text condition that needs gradients: (17f + 8s)·C + 4f·F bytes (below), kept for every block without gradient
  checkpointing (on by default on a GPU: then each block's input, and one block's tensors at a time), the additive (L, L) mask copy each block's SDPA keeps, the logits and
  the loss's temporaries; LoRA parameters, gradients and AdamW's moments in fp32; the prior bank as the trainer keeps
  it (codes and the teacher's fp32 logits, 64 × L × V).

``--check`` measures with torch's profiler (profile_memory: the CPU allocator's running total of live bytes) plus
the bytes alive before the call (benchmarks/memory.py's measure and live_bytes). Blocks are bf16 under CPU autocast,
as on a GPU; attention runs in the CPU's flash kernel, a GPU's in its own.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from var_core.switti.model import Switti, SwittiConfig  # noqa: E402
from var_core.vq.vae import VQVAE, VQVAEConfig  # noqa: E402

GIB, MIB = 2 ** 30, 2 ** 20
F32 = 4
T = 77  # text tokens per prompt

SWITTI_1024 = SwittiConfig(depth=30, reso=1024)
SWITTI_512 = SwittiConfig(depth=30, reso=512)
VAE = VQVAEConfig(ch=160, vocab_hit_rows=14)  # VQVAE-Switti: the same weights serve 512² and 1024²
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
              num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu")


def size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def gib(n: float) -> str:
    return f"{n / GIB:.2f}"


@dataclass
class Item:
    name: str
    bytes: int


# ------------------------------------------------------------------------------------------------------- weights
def weight_bytes(cfg: SwittiConfig, dtype: torch.dtype) -> int:
    """Parameters and buffers of var_core's Switti: the blocks' linear layers in dtype, the rest fp32 (exact)."""
    with torch.device("meta"):
        model = Switti(cfg).cast_blocks(dtype)
    return sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))


def parameter_count(cfg: SwittiConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in Switti(cfg).parameters())


def vae_weight_bytes(vcfg: VQVAEConfig, dtype=torch.float32) -> int:
    """The whole VQ-VAE (load_vae keeps encoder and decoder), fp32 by default (load_vae's)."""
    with torch.device("meta"):
        vae = VQVAE(vcfg)
    return sum(t.numel() for t in itertools.chain(vae.parameters(), vae.buffers())) * size(dtype)


def text_encoder_bytes(dtype=torch.float32) -> int:
    """CLIP-L's and bigG's CLIPTextModel (no projection: Switti reads hidden states and the pooled state)."""
    from transformers import CLIPTextConfig, CLIPTextModel
    total = 0
    for spec in (CLIP_L, CLIP_G):
        with torch.device("meta"):
            model = CLIPTextModel(CLIPTextConfig(**spec))
        total += sum(p.numel() for p in model.parameters()) * size(dtype)
    return total


# ------------------------------------------------------------------------------------------------------ sampling
def rows_at(cfg: SwittiConfig, batch: int, stop: int) -> list[int]:
    """Rows each scale runs: [cond; null] up to the last guided scale, the cond rows after (vq/sampling.py)."""
    return [2 * batch if k < stop else batch for k in range(len(cfg.patch_nums))]


def cross_kv_bytes(cfg: SwittiConfig, rows: int, dtype) -> int:
    """Every block's cross-attention K and V, (rows, H, T, hd) each, in the autocast dtype; kept for the whole run."""
    return 2 * cfg.depth * rows * T * cfg.embed_dim * size(dtype)


def self_kv_bytes(cfg: SwittiConfig, batch: int, stop: int, dtype) -> int:
    """Switti-AR only: every block's self-attention K, V of all scales so far (the non-AR release keeps none)."""
    if not cfg.use_ar:
        return 0
    rows = rows_at(cfg, batch, stop)
    return max(2 * cfg.depth * r * sum(p * p for p in cfg.patch_nums[:k + 1]) * cfg.embed_dim * size(dtype)
               for k, r in enumerate(rows))


def block_activation_bytes(cfg: SwittiConfig, tokens: int, dtype) -> int:
    """Inference, one block: the self-attention's live set is the peak: the residual x and the modulated input
    (f each), qkv (3s), q and k after LayerNorm and RoPE (f each), their casts to the compute dtype and SDPA's output
    (s each), = (4f + 6s)·C per token (the FFN's, 2f·C + s·C + 3s·F, is below it at F = 8C/3)."""
    s, C, Fh = size(dtype), cfg.embed_dim, cfg.ffn_hidden
    return tokens * max((4 * F32 + 6 * s) * C, (2 * F32 + s) * C + 3 * s * Fh)


def sampler_logit_bytes(cfg: SwittiConfig, rows: int, batch: int, tokens: int) -> int:
    """At one scale: the head's input (x and its LayerNorm, f·C each, per row), then the raw logits (rows) and, per
    image, the guidance mix, draw's masked row, its softmax (or the final probabilities) and multinomial's
    exponential draws: all fp32, l·V each. Unguided (rows = batch): raw + 3 per image; guided: raw + 5."""
    V = cfg.vocab_size
    per_image = 5 if rows > batch else 3
    return (rows + per_image * batch) * tokens * V * F32


def sampling_scale_peak(cfg: SwittiConfig, batch: int, stop: int, dtype) -> tuple[int, int, int]:
    """(scale, activation bytes, logit bytes) of the scale with the most (activations or logits) in use."""
    best = (0, 0, 0)
    for k, (pn, rows) in enumerate(zip(cfg.patch_nums, rows_at(cfg, batch, stop))):
        act = block_activation_bytes(cfg, rows * pn * pn, dtype)
        logit = sampler_logit_bytes(cfg, rows, batch, pn * pn) + rows * pn * pn * 2 * F32 * cfg.embed_dim
        if max(act, logit) > max(best[1], best[2]):
            best = (k, act, logit)
    return best


def vae_decode_activation_bytes(vcfg: VQVAEConfig, latent_hw: tuple[int, int], batch: int = 1,
                                dtype=torch.float32) -> int:
    """The most activation bytes alive at once in var_core's vq/vae.Decoder, walked level by level (elements ×
    dtype size); the output image included."""
    widths = [vcfg.ch * m for m in vcfg.ch_mult]
    n = len(widths)
    h, w = latent_hw
    px = h * w * batch
    peak = 0

    def resnet(c_in, c_out):
        nonlocal peak
        sc = 1 if c_in != c_out else 0  # the 1x1 shortcut's output is held while conv2 runs
        peak = max(peak, px * max(3 * c_in, 2 * c_in + c_out, c_in + (3 + sc) * c_out))

    def attn(c):
        nonlocal peak
        hw = h * w
        peak = max(peak, 5 * c * px + 2 * hw * hw * batch)

    c = widths[-1]
    peak = max(peak, px * (vcfg.Cvae * 2 + c))  # post_quant_conv, conv_in
    resnet(c, c)
    attn(c)
    resnet(c, c)
    for i in reversed(range(n)):
        for b in range(vcfg.num_res_blocks + 1):
            resnet(c if b == 0 else widths[i], widths[i])
            if i == n - 1:
                attn(widths[i])
        c = widths[i]
        if i > 0:
            peak = max(peak, px * c * 9)  # Upsample: input, 2x nearest copy, conv output
            px, h, w = px * 4, h * 2, w * 2
    peak = max(peak, px * 3 * c)  # norm_out, SiLU, conv_out
    return peak * size(dtype)


def sampling_peak(cfg=SWITTI_1024, vcfg=VAE, batch=1, stop=10, dtype=torch.bfloat16, vae_dtype=torch.float32,
                  text_dtype=torch.float32, text_resident=False, text_on_device=True,
                  decode_factor=1.0) -> tuple[int, list[Item]]:
    """Resident: transformer + VAE (+ text encoders if kept). Phases: encoding the prompts (text encoders on the
    device), the sampler's heaviest scale (cross K/V + self K/V + activations or logits), the VAE decode (the
    sampler's caches are freed before it: vq/sampling.py)."""
    w, v = weight_bytes(cfg, dtype), vae_weight_bytes(vcfg, vae_dtype)
    te = text_encoder_bytes(text_dtype) if text_on_device else 0
    rows = 2 * batch if stop > 0 else batch
    kv = cross_kv_bytes(cfg, rows, dtype) + self_kv_bytes(cfg, batch, stop, dtype)
    k, act, logits = sampling_scale_peak(cfg, batch, stop, dtype)
    last = cfg.patch_nums[-1]
    dec = int(decode_factor * vae_decode_activation_bytes(vcfg, (last, last), batch, vae_dtype))
    phases = {"encode prompts": 0 if text_resident else te, f"scale {k} ({cfg.patch_nums[k]}²)": kv + max(act, logits),
              "VAE decode": dec}
    resident = w + v + (te if text_resident else 0)
    phase = max(phases, key=phases.get)
    items = [Item("transformer weights", w), Item("VAE weights", v), Item("text encoders", te),
             Item("cross (+ self) K/V", kv), Item(f"block activations, scale {k}", act),
             Item(f"logits + draw, scale {k}", logits), Item("VAE decode activations", dec),
             Item(f"peak phase: {phase}", 0)]
    return resident + phases[phase], items


# ------------------------------------------------------------------------------------------------------ training
# Per-token bytes autograd saves in one Switti block with LoRA on ca + ffn (fp32 low-rank paths, vq/patch.py) and a
# text condition needing gradients, read off switti/model.py (f: fp32, s: compute dtype):
#   self-attention: the block input (RMSNorm) f, norm1's output (·(1+scale1)) f, q and k in fp32 (LayerNorm) 2f,
#     their casts (SDPA) 2s, the qkv output (v is a view of it, SDPA keeps it) 3s, SDPA's output s; norm2: its fp32
#     input f and output (·gamma1) f                                                    = 6f + 6s
#   cross-attention: the residual (norm1) f, norm1's output (to_q's LoRA A) f, to_q's fp32 output (LayerNorm) f, q's
#     cast and SDPA's output 2s, proj's fp32 input (its LoRA A) f, proj's output (norm2) f = 5f + 2s
#   FFN: the residual (norm1) f, norm1's output (·(1+scale2)) f, the modulated input (gate/up LoRA A) f, gate's
#     and up's fp32 outputs (SiLU, product) 2f·F, SiLU's output f·F, the product (down's LoRA A) f·F, down's output
#     (norm2) f, norm2's output (·gamma2) f                                             = 6f + 4f·F/C
# = (17f + 8s)·C + 4f·F per token; plus the (L, L) additive mask each block's SDPA keeps in s.
SAVED_F_C, SAVED_S_C, SAVED_F_FFN = 17, 8, 4
# Working set of a block's backward beyond what it saved: the residual's gradient in and out (f each), the
# attention/FFN input's (f) and the FFN hidden's (gate, up, product: 3f·F).
BWD_F_C, BWD_F_FFN = 3, 3


def training_activation_bytes(cfg: SwittiConfig, batch: int, dtype) -> int:
    s, C, Fh = size(dtype), cfg.embed_dim, cfg.ffn_hidden
    n = batch * cfg.L
    saved = cfg.depth * (n * ((SAVED_F_C * F32 + SAVED_S_C * s) * C + SAVED_F_FFN * F32 * Fh) + cfg.L ** 2 * s)
    working = n * (BWD_F_C * F32 * C + BWD_F_FFN * F32 * Fh)
    return saved + working


def loss_bytes(cfg: SwittiConfig, batch: int, distill: bool) -> int:
    """The logits (B, L, V) fp32 and the loss's temporaries: cross-entropy's log-softmax and its gradient (3 in all);
    distillation's teacher and student log-softmax, exp and product (6 in all)."""
    return (6 if distill else 3) * batch * cfg.L * cfg.vocab_size * F32


def lora_parameters(cfg: SwittiConfig, rank=16, groups=("ca", "ffn"), vectors=4) -> int:
    C, Fh, D = cfg.embed_dim, cfg.ffn_hidden, cfg.context_dim
    shapes = {"sa": [(3 * C, C), (C, C)], "ca": [(C, C), (2 * C, D), (C, C)], "ffn": [(Fh, C), (Fh, C), (C, Fh)]}
    return cfg.depth * sum(rank * (o + i) for g in groups for o, i in shapes[g]) + vectors * D


def bank_bytes(cfg: SwittiConfig, samples=64, logit_dtype=torch.float32) -> int:
    """The prior bank as the trainer keeps it: codes (int64) and the teacher's logits, (samples, L, V)."""
    return samples * cfg.L * (8 + cfg.vocab_size * size(logit_dtype))


def tuning_peak(cfg=SWITTI_512, vcfg=VAE, batch=2, rank=16, dtype=torch.bfloat16, text_dtype=torch.float32,
                samples=64, bank_dtype=torch.float32, checkpointing=True) -> tuple[int, list[Item]]:
    """Frozen weights, VAE, text encoders (every step), LoRA state, the bank, then the larger of one student
    forward + backward (one half: instance and prior back-propagate one after the other) and drawing teacher
    samples (the bank's chunks, concatenated at the end: the bank twice; with samples 0, a batch drawn every step)."""
    w, v, te = weight_bytes(cfg, dtype), vae_weight_bytes(vcfg), text_encoder_bytes(text_dtype)
    lora = 4 * F32 * lora_parameters(cfg, rank)
    bank = bank_bytes(cfg, samples, bank_dtype) if samples else 0
    if checkpointing:  # the trainer's default on a GPU: each block's fp32 input kept, one block rebuilt at a time
        s, C, Fh = size(dtype), cfg.embed_dim, cfg.ffn_hidden
        n = batch * cfg.L
        act = cfg.depth * n * F32 * C + n * ((SAVED_F_C * F32 + SAVED_S_C * s) * C + SAVED_F_FFN * F32 * Fh) \
            + cfg.L ** 2 * s + n * (BWD_F_C * F32 * C + BWD_F_FFN * F32 * Fh)
    else:
        act = training_activation_bytes(cfg, batch, dtype)
    step = act + loss_bytes(cfg, batch, distill=True)
    last = cfg.patch_nums[-1] ** 2
    draw = bank + sampler_logit_bytes(cfg, batch, batch, last) + block_activation_bytes(cfg, batch * last, dtype) \
        + cross_kv_bytes(cfg, batch, dtype) + batch * cfg.L * cfg.vocab_size * F32  # the chunk's returned logits
    items = [Item("transformer weights", w), Item("VAE weights", v), Item("text encoders", te),
             Item("LoRA params+grads+AdamW", lora), Item("prior bank", bank), Item("forward+backward", step),
             Item("drawing teacher samples (extra)", draw)]
    return w + v + te + lora + bank + max(step, draw), items


def predict() -> None:
    print("Predicted peak memory of live tensors, GiB (a GPU adds its CUDA context and allocator slack, ~0.5-1 GiB)\n")
    print(f"Switti-1024: {parameter_count(SWITTI_1024) / 1e9:.2f} B parameters; bf16 blocks "
          f"{gib(weight_bytes(SWITTI_1024, torch.bfloat16))}, fp32 {gib(weight_bytes(SWITTI_1024, torch.float32))}; "
          f"VAE fp32 {gib(vae_weight_bytes(VAE))}; text encoders fp32 {gib(text_encoder_bytes())}, bf16 "
          f"{gib(text_encoder_bytes(torch.bfloat16))}\n")
    bf, f32 = torch.bfloat16, torch.float32
    rows = [
        ("sampling 1024², batch 1, CFG: defaults (CLI)", 12, lambda: sampling_peak()),
        ("  but text encoders bf16", 12, lambda: sampling_peak(text_dtype=bf)),
        ("  but text encoders kept on the device", 12, lambda: sampling_peak(text_resident=True)),
        ("  but fp32 blocks", 12, lambda: sampling_peak(dtype=f32)),
        ("  but fp32 blocks, text encoders bf16", 12, lambda: sampling_peak(dtype=f32, text_dtype=bf)),
        ("  but guidance on all 14 scales", 12, lambda: sampling_peak(stop=14)),
        ("  but batch 4", 12, lambda: sampling_peak(batch=4)),
        ("  but batch 4, VAE bf16", 12, lambda: sampling_peak(batch=4, vae_dtype=bf)),
        ("  VAE decode counted 1.45x (CPU check's worst)", 12,
         lambda: sampling_peak(decode_factor=1.45)),
        ("  Switti-AR (self-attention cache)", 12,
         lambda: sampling_peak(cfg=SwittiConfig(depth=30, reso=1024, use_ar=True))),
        ("LoRA r16 ca+ffn, 512², batch 2: defaults", 24, lambda: tuning_peak()),
        ("  but fp32 frozen blocks", 24, lambda: tuning_peak(dtype=f32)),
        ("  but gradient checkpointing off (the CPU's default)", 24, lambda: tuning_peak(checkpointing=False)),
        ("  but checkpointing off, batch 1", 24, lambda: tuning_peak(batch=1, checkpointing=False)),
        ("  but checkpointing off, batch 1, text bf16, no bank", 24,
         lambda: tuning_peak(batch=1, text_dtype=bf, samples=0, checkpointing=False)),
    ]
    print(f"{'scenario':52} {'GiB':>7} {'goal':>6}")
    for label, goal, fn in rows:
        value = fn()[0]
        print(f"{label:52} {gib(value):>7} {'<= ' + str(goal):>6}" + ("  met" if value <= goal * GIB else "  NOT met"))
    print()
    for label, (value, items) in (("sampling, defaults", sampling_peak()), ("tuning, defaults", tuning_peak())):
        print(f"{label}: " + ", ".join(f"{i.name} {gib(i.bytes)}" if i.bytes else i.name for i in items))
    print(f"LoRA parameters (r16, ca+ffn, 4 placeholder vectors): {lora_parameters(SWITTI_512):,}")


# ------------------------------------------------------------------------------------------------------- check
SMALL = dict(depth=2, embed_dim=256, num_heads=4)  # head_dim 64 as released; the release's context widths
SMALL_VAE = VQVAEConfig(ch=32, vocab_hit_rows=14)


def small_model(reso: int, dtype, use_ar=False) -> Switti:
    from benchmarks.bench_sample_vq import randomize_
    model = randomize_(Switti(SwittiConfig(reso=reso, use_ar=use_ar, **SMALL)), seed=0)
    return model.float().cast_blocks(dtype).eval().requires_grad_(False)


def row(what, config, measured, predicted):
    print(f"{what:46} {config:30} {measured / MIB:9.1f} {predicted / MIB:9.1f} {measured / predicted:6.2f}")


def check() -> None:
    from benchmarks.memory import live_bytes, measure
    from var_core.switti.text import PromptEmbeds
    from var_core.vq import sampling
    torch.manual_seed(0)
    print("CPU check (MiB; measured = bytes alive before the call + the profiler's peak of allocations during it)\n")
    print(f"{'run':46} {'config':30} {'measured':>9} {'predicted':>9} {'ratio':>6}")
    g = torch.Generator().manual_seed(1)
    text = PromptEmbeds(torch.randn(1, T, 2048, generator=g), torch.randn(1, 1280, generator=g),
                        torch.arange(T)[None] < 9)
    null = PromptEmbeds(torch.randn(1, T, 2048, generator=g), torch.randn(1, 1280, generator=g),
                        torch.arange(T)[None] < 2)
    vae = VQVAE(SMALL_VAE).eval().requires_grad_(False)
    from var_core.switti.family import SWITTI
    vae.family = SWITTI  # what load_vae sets
    vae.decode_latent = lambda fhat: fhat.new_zeros(fhat.shape[0], 3, 1, 1)  # the decode is checked on its own
    for reso, dtype, stop, use_ar in ((1024, torch.bfloat16, 10, False), (1024, torch.bfloat16, 14, False),
                                      (512, torch.bfloat16, 10, False), (1024, torch.float32, 10, False),
                                      (512, torch.bfloat16, 10, True)):
        model = small_model(reso, dtype, use_ar)
        cfg = model.config
        base = live_bytes(model, vae)
        peak, _ = measure(sampling.sample, model, vae, text, negative=null, cfg=6.0, top_k=400, top_p=0.95, seed=0,
                          cfg_stop_scale=stop)
        _, act, logits = sampling_scale_peak(cfg, 1, stop, dtype)
        predicted = weight_bytes(cfg, dtype) + vae_weight_bytes(SMALL_VAE) + cross_kv_bytes(cfg, 2, dtype) \
            + self_kv_bytes(cfg, 1, stop, dtype) + max(act, logits)
        row("sample, CFG, no decode", f"C{cfg.embed_dim} {str(dtype)[6:]} {reso} stop {stop}{' AR' if use_ar else ''}",
            base + peak, predicted)
        del model
        gc.collect()
    for ch, hw in ((32, (16, 16)), (32, (32, 32)), (64, (16, 16))):
        vcfg = VQVAEConfig(ch=ch, vocab_hit_rows=14)
        dec = VQVAE(vcfg).eval().requires_grad_(False)
        z = torch.randn(1, vcfg.Cvae, *hw)
        base = live_bytes(dec, z)
        with torch.no_grad():
            peak, _ = measure(dec.decode_latent, z)
        predicted = vae_weight_bytes(vcfg) + z.numel() * F32 + vae_decode_activation_bytes(vcfg, hw)
        row("VAE decode (fp32)", f"ch {ch} {hw[0] * 16}²", base + peak, predicted)
        del dec
    for reso, batch in ((256, 2), (512, 1), (512, 2)):
        check_training(reso, batch, live_bytes, measure)


def check_training(reso: int, batch: int, live_bytes, measure) -> None:
    """One teacher-forced forward + backward of a scaled-down Switti with rank-16 LoRA on ca + ffn added the way
    vq/patch.py adds it (fp32 x·Aᵀ·Bᵀ on the layer's output) and text features that need gradients (placeholder
    vectors), bf16 blocks under CPU autocast; cross-entropy on random codes."""
    dtype = torch.bfloat16
    model = small_model(reso, dtype)
    cfg = model.config
    groups = {"cross_attn.to_q", "cross_attn.to_kv", "cross_attn.proj", "ffn.gate_proj", "ffn.up_proj",
              "ffn.down_proj"}
    loras = []
    for block in model.blocks:
        for name in groups:
            layer = block.get_submodule(name)
            a = (torch.randn(16, layer.in_features) * 0.01).requires_grad_()
            b = torch.zeros(layer.out_features, 16).requires_grad_()
            loras += [a, b]

            def hook(module, args, out, a=a, b=b):
                with torch.autocast("cpu", enabled=False):
                    return out.float() + F.linear(F.linear(args[0].float(), a), b)
            layer.register_forward_hook(hook)
    from var_core.switti.text import PromptEmbeds
    g = torch.Generator().manual_seed(2)
    embeds = torch.randn(batch, T, cfg.context_dim, generator=g).requires_grad_()
    pooled = torch.randn(batch, cfg.pooled_dim, generator=g).requires_grad_()
    cond = PromptEmbeds(embeds, pooled, torch.arange(T)[None].expand(batch, -1) < 12)
    inputs = torch.randn(batch, cfg.L - 1, cfg.Cvae, generator=g)
    labels = torch.randint(cfg.vocab_size, (batch, cfg.L), generator=g)

    def step():
        logits = model(cond, inputs)
        F.cross_entropy(logits.transpose(1, 2).float(), labels).backward()
    base = live_bytes(model, loras, embeds, pooled, inputs, labels)
    peak, _ = measure(step)
    fixed = weight_bytes(cfg, dtype) + F32 * sum(t.numel() for t in loras) * 2  # LoRA params + their grads
    predicted = fixed + training_activation_bytes(cfg, batch, dtype) + loss_bytes(cfg, batch, distill=False)
    row("LoRA fwd+bwd (ca+ffn), text with grads", f"C{cfg.embed_dim} d{cfg.depth} bf16 {reso} B{batch}", base + peak,
        predicted)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="measure scaled-down runs on the CPU and compare")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    check() if args.check else predict()
