"""Peak accelerator memory of Infinity-2B and Infinity-8B, from an analytic model, and a check of that model against
measured runs of scaled-down configs on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/memory.py            # predicted peaks: sampling at 1M, LoRA tuning at 0.25M
    OMP_NUM_THREADS=1 python benchmarks/memory.py --check    # measure scaled-down runs on the CPU, compare
    python benchmarks/memory.py --plan                       # what fits on 8 / 12 / 16 / 24 GB cards, and how

The model counts bytes of live tensors (what ``torch.cuda.max_memory_allocated`` reports), not the caching allocator's
reserve or the CUDA context (about 0.5 GiB more on a GPU). Its parts, each one function below:

* weights: exact, from the architecture built on the meta device; block linear layers in the compute dtype (bf16 on
  CUDA: load_transformer's default), everything else fp32 (Infinity.cast_blocks);
* KV cache: self-attention keys and values of every block for the whole sequence, preallocated (KVCache), in the
  compute dtype (SelfAttention stores k and v as v's dtype, which is autocast's);
* sampling activations: the tensors alive inside one block at the largest scale (inference mode keeps nothing
  between blocks), counted from the order of operations in transformer.Block;
* training activations: the tensors autograd saves in one block (counted per token from transformer.Block with LoRA
  on the selected groups), kept for every block without gradient checkpointing; with it, only each block's input
  plus one recomputed block; plus a backward working set and the attention mask's saved copy per block;
* LoRA: parameters, gradients and AdamW's two moments, all fp32;
* T5 (flan-t5-xl encoder, fp16 on CUDA): on the GPU only while prompts are encoded (the CLI moves it to the CPU
  after), so it adds to the peak only where noted;
* VAE decode: the VAE's weights plus the largest set of activations alive in its decoder, walked level by level.

``--check`` measures with torch's profiler (profile_memory: every allocation and free of the CPU allocator, in order);
the peak of the running sum over a call plus the bytes already alive before it (weights and state, counted exactly) is
the measured peak. Blocks are bf16 on the CPU as on a GPU (CPU autocast); attention runs in the CPU's flash kernel,
a GPU's in its own (flash / memory-efficient): their workspaces are the part of this model left to check on a GPU.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import tempfile
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from var_core.infinity.bitvae import BitVAE, BitVAEConfig  # noqa: E402
from var_core.schedules import scale_schedule  # noqa: E402
from var_core.infinity.model import Infinity, InfinityConfig  # noqa: E402
from var_core.memory import F32, dtype_size, kv_cache_bytes, sampling_activation_bytes, tokens  # noqa: E402
from var_core.tuning.memory import training_activation_bytes  # noqa: E402

GIB = 2 ** 30

# The released architectures (docs: Infinity-2B's run_infinity.py defaults; Infinity-8B: depth 40, C 3584, 28 heads,
# block_chunks 8, tokens 2x2 patches of the f8 d14 VAE = 56 bits). FFN hidden is 4C in both.
MODELS = {
    "Infinity-2B": (InfinityConfig(), BitVAEConfig(d=32, base_ch=128, ch_mult=(1, 2, 4, 4, 4))),
    "Infinity-8B": (InfinityConfig(depth=40, embed_dim=3584, num_heads=28, block_chunks=8, ffn_hidden=14336, bits=56),
                    BitVAEConfig(d=14, base_ch=128, ch_mult=(1, 2, 4, 4))),
}
# flan-t5-xl's encoder, what Infinity's text path reads (Ct5 2048): vocab 32128, 24 layers, d_ff 5120 (gated GELU).
T5_XL = dict(vocab=32128, d_model=2048, layers=24, d_ff=5120, heads=32, d_kv=64)

@dataclass
class Item:
    name: str
    bytes: int


def gib(n: float) -> str:
    return f"{n / GIB:.2f}"


# ---------------------------------------------------------------------------------------------------------- parts
def weight_bytes(cfg: InfinityConfig, block_dtype: torch.dtype) -> int:
    """Parameters and buffers of the transformer: block linear layers in block_dtype, the rest fp32 (exact)."""
    with torch.device("meta"):
        model = Infinity(cfg).cast_blocks(block_dtype)
    return sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))


def vae_weight_bytes(vcfg: BitVAEConfig, dtype=torch.float32) -> int:
    """The whole BitVAE (encoder and decoder: load_vae keeps both), fp32 by default."""
    with torch.device("meta"):
        vae = BitVAE(vcfg)
    return sum(p.numel() for p in itertools.chain(vae.parameters(), vae.buffers())) * dtype_size(dtype)


def lora_targets(cfg: InfinityConfig, groups=("ca", "ffn")) -> list[tuple[int, int]]:
    """(out, in) of every matrix a LoRA adapts in one block (tuning/selection.GROUPS)."""
    C, F = cfg.embed_dim, cfg.ffn_hidden
    shapes = {"sa": [(3 * C, C), (C, C)], "ca": [(C, C), (2 * C, C), (C, C)], "ffn": [(F, C), (C, F)]}
    return [shape for g in groups for shape in shapes[g]]


def lora_parameters(cfg: InfinityConfig, rank: int = 16, groups=("ca", "ffn"), placeholder_vectors: int = 4) -> int:
    return cfg.depth * sum(rank * (o + i) for o, i in lora_targets(cfg, groups)) \
        + placeholder_vectors * cfg.text_channels


def lora_state_bytes(cfg: InfinityConfig, rank: int = 16, groups=("ca", "ffn")) -> int:
    """fp32 parameters, gradients and AdamW's exp_avg and exp_avg_sq."""
    return 4 * F32 * lora_parameters(cfg, rank, groups)


def t5_bytes(dtype=torch.float16, cfg=T5_XL) -> int:
    d, inner = cfg["d_model"], cfg["heads"] * cfg["d_kv"]
    per_layer = 4 * d * inner + 3 * d * cfg["d_ff"] + 2 * d
    return (cfg["vocab"] * d + cfg["layers"] * per_layer + d + 32 * cfg["heads"]) * dtype_size(dtype)


def vae_decode_activation_bytes(vcfg: BitVAEConfig, latent_hw: tuple[int, int], batch: int = 1,
                                dtype=torch.float32) -> int:
    """The most activation bytes alive at once in BitVAE's decoder (bitvae.Decoder), walked level by level:
    a ResnetBlock holds its input, a GroupNorm+SiLU output and a conv output (2·c_in + c_out or c_in + 2·c_out
    channels); an Upsample holds its input, the 2x nearest copy and the conv's output (1 + 4 + 4 times)."""
    widths = [vcfg.base_ch * m for m in vcfg.ch_mult]
    px = latent_hw[0] * latent_hw[1] * batch
    peak = 0

    def block(c_in, c_out):
        nonlocal peak
        peak = max(peak, px * max(2 * c_in + c_out, c_in + 2 * c_out))

    c = widths[-1]
    peak = max(peak, px * (vcfg.d + c))  # conv_in
    block(c, c)
    block(c, c)  # mid
    for level in reversed(range(len(widths))):
        for b in range(vcfg.num_res_blocks + 1):
            block(c if b == 0 else widths[level], widths[level])
        c = widths[level]
        if level > 0:
            peak = max(peak, px * c * 9)
            px *= 4
    peak = max(peak, px * (2 * c + 3))  # norm_out + SiLU, conv_out
    return peak * dtype_size(dtype)


# ------------------------------------------------------------------------------------------------------ scenarios
def sampling_peak(cfg, vcfg, pn="1M", batch=1, cfg_guidance=True, dtype=torch.bfloat16,
                  t5_resident=False, cache_freed_before_decode=True) -> tuple[int, list[Item]]:
    """Sampling: weights, VAE, then the largest of the prompt encoding (T5 on the GPU), the sampler's last scale
    (KV cache + activations) and the VAE decode (plus the KV cache if it is still alive then)."""
    schedule = scale_schedule(1.0, pn)
    seqs = batch * (2 if cfg_guidance else 1)
    w, v, t5 = weight_bytes(cfg, dtype), vae_weight_bytes(vcfg), t5_bytes()
    kv = kv_cache_bytes(cfg, schedule, seqs, dtype)
    act = sampling_activation_bytes(cfg, schedule, seqs, dtype)
    hw = schedule[-1][0] * cfg.token_patch, schedule[-1][1] * cfg.token_patch
    dec = vae_decode_activation_bytes(vcfg, hw, batch)
    phases = {"encode prompts (T5 on GPU)": t5, "last scale": kv + act,
              "VAE decode": dec + (0 if cache_freed_before_decode else kv)}
    resident = w + v + (t5 if t5_resident else 0)
    phase = max(phases, key=phases.get)
    items = [Item("transformer weights", w), Item("VAE weights", v), Item("KV cache", kv),
             Item("activations, last scale", act), Item("VAE decode activations", dec), Item("T5 weights (fp16)", t5),
             Item(f"peak phase: {phase}", 0)]
    return resident + phases[phase], items


def tuning_peak(cfg, vcfg, pn="0.25M", batch=2, rank=16, groups=("ca", "ffn"), checkpointing=True,
                dtype=torch.bfloat16, prior_samples=64) -> tuple[int, list[Item]]:
    """LoRA tuning (SubjectTrainer): frozen weights, VAE, LoRA state, the prior bank, then the larger of one
    student forward + backward and drawing the teacher's bank (KV-cached sampling, batch_size sequences, no CFG)."""
    schedule = scale_schedule(1.0, pn)
    w, v = weight_bytes(cfg, dtype), vae_weight_bytes(vcfg)
    lora = lora_state_bytes(cfg, rank, groups)
    bank = prior_samples * tokens(schedule) * (cfg.bits + 2 * cfg.bits * F32)
    act = training_activation_bytes(cfg, schedule, batch, dtype, checkpointing)
    draw = kv_cache_bytes(cfg, schedule, batch, dtype) + sampling_activation_bytes(cfg, schedule, batch, dtype)
    items = [Item("transformer weights", w), Item("VAE weights", v), Item("LoRA params+grads+AdamW", lora),
             Item("prior bank", bank), Item("forward+backward activations", act), Item("drawing the bank", draw)]
    return w + v + lora + bank + max(act, draw), items


def predict() -> None:
    print("Predicted peak memory of live tensors, GiB (a GPU adds its CUDA context and allocator slack, ~0.5-1 GiB)\n")
    names = list(MODELS)
    rows = [
        ("sampling 1M, batch 1, CFG: defaults", 40, lambda c, v: sampling_peak(c, v)),
        ("  but T5 left on the GPU", 40, lambda c, v: sampling_peak(c, v, t5_resident=True)),
        ("  but KV cache alive during the VAE decode", 40,
         lambda c, v: sampling_peak(c, v, cache_freed_before_decode=False)),
        ("  but fp32 blocks and KV cache", 40, lambda c, v: sampling_peak(c, v, dtype=torch.float32)),
        ("LoRA r16 ca+ffn, 0.25M, batch 2: defaults", 48, lambda c, v: tuning_peak(c, v)),
        ("  but gradient checkpointing off", 48, lambda c, v: tuning_peak(c, v, checkpointing=False)),
        ("  but fp32 frozen blocks", 48, lambda c, v: tuning_peak(c, v, dtype=torch.float32)),
        ("  but a second copy of the weights (teacher)", 48,
         lambda c, v: (tuning_peak(c, v)[0] + weight_bytes(c, torch.bfloat16), None)),
    ]
    print(f"{'scenario':46} " + " ".join(f"{n:>12}" for n in names) + f" {'8B goal':>8}")
    for label, goal, fn in rows:
        values = [fn(*MODELS[n])[0] for n in names]
        print(f"{label:46} " + " ".join(f"{gib(v):>12}" for v in values) + f" {'<= ' + str(goal):>8}"
              + ("  met" if values[-1] <= goal * GIB else "  NOT met"))
    print()
    for name, (cfg, vcfg) in MODELS.items():
        _, items = sampling_peak(cfg, vcfg)
        _, titems = tuning_peak(cfg, vcfg)
        print(f"{name}: weights bf16 {gib(weight_bytes(cfg, torch.bfloat16))} (fp32 "
              f"{gib(weight_bytes(cfg, torch.float32))}); LoRA parameters {lora_parameters(cfg):,}")
        print("   sampling: " + ", ".join(f"{i.name} {gib(i.bytes)}" if i.bytes else i.name for i in items))
        print("   tuning:   " + ", ".join(f"{i.name} {gib(i.bytes)}" for i in titems))
    print("\nDefaults: bf16 blocks and KV cache (load_transformer on CUDA), T5 moved to the CPU after encoding (CLI), "
          "KV cache freed before the VAE decode (sample), teacher = the base weights (SubjectTrainer), gradient "
          "checkpointing on (TrainConfig), prior distillation with a 64-sample bank.")


# ---------------------------------------------------------------------------------------------------------- check
def measure(fn, *args, **kwargs):
    """(peak bytes allocated above the start, result) of fn on the CPU: the largest 'Total Allocated' that the CPU
    allocator reports to the profiler (allocations made during the call and still alive; tensors that existed
    before are left out, and counted by live_bytes)."""
    import json
    import warnings
    from torch.profiler import ProfilerActivity, profile
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn(*args, **kwargs)
    with tempfile.TemporaryDirectory() as folder:
        prof.export_chrome_trace(os.path.join(folder, "trace.json"))
        with open(os.path.join(folder, "trace.json")) as f:
            events = json.load(f)["traceEvents"]
    records = sorted((e["ts"], e["args"]["Ev Idx"], e["args"]["Total Allocated"], e["args"]["Bytes"])
                     for e in events if e.get("name") == "[memory]")
    if not records:
        return 0, out
    # The allocator's running total is global: it may start above zero (tensors made during an earlier profiling and
    # freed outside it), so the peak is taken from the total just before the first record.
    start = records[0][2] - records[0][3]
    return max(total for _, _, total, _ in records) - start, out


def live_bytes(*objects) -> int:
    """Bytes of the distinct storages of the tensors in modules, tensors, dicts and lists given."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()

    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            for t in itertools.chain(obj.parameters(), obj.buffers()):
                add(t)
        elif isinstance(obj, dict):
            for t in obj.values():
                add(t)
        elif isinstance(obj, (list, tuple)):
            for t in obj:
                add(t)
        else:
            add(obj)
    return total


# Scaled down with Infinity-8B's proportions: head_dim 128, FFN 4C, 56-bit tokens over an f8 d14 VAE.
SMALL_8B = InfinityConfig(depth=4, embed_dim=256, num_heads=2, block_chunks=2, ffn_hidden=1024, bits=56,
                          text_channels=32, text_maxlen=64, text_pool_heads=1)
SMALL_8B_VAE = BitVAEConfig(d=14, base_ch=32, ch_mult=(1, 2, 4, 4))


def small_model(dtype):
    from toyworld.builders import randomize_
    return randomize_(Infinity(SMALL_8B), seed=0).cast_blocks(dtype).eval().requires_grad_(False)


def row(what, config, measured, predicted):
    mib = 2 ** 20
    print(f"{what:44} {config:34} {measured / mib:9.2f} {predicted / mib:9.2f} {measured / predicted:6.2f}")


def check() -> None:
    from var_core.sampling import sample
    torch.manual_seed(0)
    print("CPU check (MiB; measured = bytes alive before the call + the profiler's peak of allocations during it)\n")
    print(f"{'run':44} {'config':34} {'measured':>9} {'predicted':>9} {'ratio':>6}")
    cfg, vcfg = SMALL_8B, SMALL_8B_VAE
    shape = f"d{cfg.depth} C{cfg.embed_dim} H{cfg.num_heads} F{cfg.ffn_hidden}"
    text = [torch.randn(7, cfg.text_channels)]
    for dtype, pn in ((torch.bfloat16, "0.25M"), (torch.bfloat16, "0.06M"), (torch.float32, "0.25M")):
        model = small_model(dtype)
        schedule = scale_schedule(1.0, pn)
        base = live_bytes(model)
        peak, _ = measure(sample, model, None, text, schedule, cfg=3.0, seed=0)
        predicted = weight_bytes(cfg, dtype) + kv_cache_bytes(cfg, schedule, 2, dtype) \
            + sampling_activation_bytes(cfg, schedule, 2, dtype)
        row("sample, CFG, no decode", f"{shape} {str(dtype)[6:]} {pn}", base + peak, predicted)
    vae = BitVAE(vcfg).eval()
    for hw in ((32, 32), (64, 64)):
        z = torch.randn(1, vcfg.d, *hw)
        base = live_bytes(vae, z)
        with torch.no_grad():
            peak, _ = measure(vae.decode_latent, z)
        predicted = vae_weight_bytes(vcfg) + z.numel() * F32 + vae_decode_activation_bytes(vcfg, hw) \
            + 3 * hw[0] * hw[1] * 64 * F32  # the returned image
        row("VAE decode", f"base_ch {vcfg.base_ch} f8 d14 {hw[0] * 8}²", base + peak, predicted)
    model = small_model(torch.bfloat16)
    schedule = scale_schedule(1.0, "0.06M")
    base = live_bytes(model, vae)
    peak, _ = measure(sample, model, vae, text, schedule, cfg=3.0, seed=0)
    kv = kv_cache_bytes(cfg, schedule, 2, torch.bfloat16)
    hw = (schedule[-1][0] * 2, schedule[-1][1] * 2)
    last = kv + sampling_activation_bytes(cfg, schedule, 2, torch.bfloat16)
    decode = vae_decode_activation_bytes(vcfg, hw) + 3 * hw[0] * hw[1] * 64 * F32
    row("sample + decode (cache freed before decode)", f"{shape} bf16 0.06M", base + peak,
        weight_bytes(cfg, torch.bfloat16) + vae_weight_bytes(vcfg) + max(last, decode))
    check_tuning(model, vae)


def check_tuning(model, vae) -> None:
    from toyworld.builders import subject_pictures
    from toyworld.t5 import make_t5
    from var_core.schedules import pixel_size
    from var_core.infinity.t5 import load_text_encoder
    from var_core.tuning import SubjectTrainer, TrainConfig, prepare_images
    cfg, vcfg = SMALL_8B, SMALL_8B_VAE
    shape = f"d{cfg.depth} C{cfg.embed_dim} H{cfg.num_heads} F{cfg.ffn_hidden}"
    encoder = load_text_encoder(make_t5(tempfile.mkdtemp() + "/t5", d_model=cfg.text_channels))
    for pn, ckpt in (("0.06M", False), ("0.06M", True), ("0.25M", False), ("0.25M", True)):
        schedule = scale_schedule(1.0, pn)
        data = prepare_images(list(subject_pictures(2, pixel_size(schedule)[0])), pixel_size(schedule),
                              "<placeholder>", "dog")
        tc = TrainConfig(class_word="dog", mode="lora", rank=16, pn=pn, batch_size=2, prior_samples=2,
                         gradient_checkpointing=ckpt, steps=10)
        trainer = SubjectTrainer(model, vae, encoder, data, tc)
        trainer.step()  # draws the bank and creates AdamW's moments
        state = [t for s in trainer.optimizer.state.values() for t in s.values()]
        base = live_bytes(model, vae, trainer.delta.tensors, state, list(trainer.prior_bank), trainer.latents,
                          trainer.text, trainer.prior_text)
        peak, _ = measure(trainer.step)
        bank = tc.prior_samples * tokens(schedule) * (cfg.bits + 2 * cfg.bits * F32)
        fixed = weight_bytes(cfg, torch.bfloat16) + vae_weight_bytes(vcfg) + lora_state_bytes(cfg, 16) + bank
        act = training_activation_bytes(cfg, schedule, 2, torch.bfloat16, ckpt)
        row(f"LoRA step, batch 2, ckpt {'on' if ckpt else 'off'}", f"{shape} bf16 {pn}", base + peak, fixed + act)
        row("   of which the step's own allocations", "", peak, act + F32 * lora_parameters(cfg))
        del trainer
        gc.collect()


# ---------------------------------------------------------------------------------------------------------- plan
CARDS = (8, 12, 16, 24)  # GiB
RESERVE = GIB  # kept free on every card: the CUDA context and the caching allocator's slack
PCIE = 25e9  # host-to-device bytes/s from pinned memory, assumed (PCIe 4.0 x16); benchmarks/gpu_memory.py measures it
JOBS = {  # what a user runs: (peak function, passes over the blocks per image or step)
    "sample 512², batch 1, CFG": (lambda c, v: sampling_peak(c, v, pn="0.25M"), len(scale_schedule(1.0, "0.25M"))),
    "sample 1024², batch 1, CFG": (lambda c, v: sampling_peak(c, v, pn="1M"), len(scale_schedule(1.0, "1M"))),
    # a step: the instance and prior halves, each a forward and its recomputation in the backward pass
    "LoRA tuning 512², batch 2 (a step)": (lambda c, v: tuning_peak(c, v), 4),
}


def block_bytes(cfg: InfinityConfig, dtype=torch.bfloat16) -> int:
    """One block's weights; dtype "fp8": its linear weights one byte each plus an fp32 scale per row (fp8.py)."""
    with torch.device("meta"):
        block = Infinity(cfg).cast_blocks(torch.bfloat16 if dtype == "fp8" else dtype).blocks[0]
    total = sum(t.numel() * t.element_size() for t in itertools.chain(block.parameters(), block.buffers()))
    if dtype == "fp8":
        total -= sum(m.weight.numel() * (m.weight.element_size() - 1) - 4 * m.out_features
                     for m in block.modules() if isinstance(m, torch.nn.Linear))
    return total


def fit(peak: int, cfg: InfinityConfig, card_gib: int, dtype=torch.bfloat16) -> tuple[int, int] | None:
    """(resident blocks, bytes streamed per pass over the blocks) that make a job of resident ``peak`` fit a card
    (streaming.resident_blocks' rule: the rest of the model, two blocks in flight, then whole blocks while they fit;
    streaming needs gradient checkpointing in tuning, which the peak already assumes); None: it does not fit."""
    budget = card_gib * GIB - RESERVE
    if peak <= budget:
        return cfg.depth, 0
    b = block_bytes(cfg, dtype)
    fixed = peak - (cfg.depth - 2) * b
    if fixed > budget:
        return None
    resident = min(cfg.depth - 1, int((budget - fixed) // b))
    return resident, (cfg.depth - resident) * b


BLOCKS = {"bf16": torch.bfloat16, "fp8": "fp8"}  # the blocks' storage: the default on a GPU, and fp8.py's


def peak_of(name: str, job: str, blocks: str = "bf16") -> int:
    """The job's resident peak with the blocks stored as ``blocks`` (the rest of the model, the job: as for bf16)."""
    cfg, vcfg = MODELS[name]
    saved = cfg.depth * (block_bytes(cfg) - block_bytes(cfg, BLOCKS[blocks]))
    return JOBS[job][0](cfg, vcfg)[0] - saved


def plan_cells(name: str, job: str, blocks: str = "bf16") -> list[tuple[int, int] | None]:
    """fit() of a job on every card."""
    cfg = MODELS[name][0]
    return [fit(peak_of(name, job, blocks), cfg, card, BLOCKS[blocks]) for card in CARDS]


def readme_table() -> str:
    """The README's "what fits" table."""
    rows = ["| job | blocks | " + " | ".join(f"{c} GB" for c in CARDS) + " |", "|---|---|" + "---|" * len(CARDS)]
    for name, (cfg, _) in MODELS.items():
        for job in JOBS:
            for blocks in BLOCKS:
                cells = ["—" if got is None else "resident" if got[1] == 0 else
                         f"streamed ({cfg.depth - got[0]} of {cfg.depth})" for got in plan_cells(name, job, blocks)]
                rows.append(f"| {name}, {job.split(',')[0]} | {blocks} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plan() -> None:
    """For each job and card: resident, or how many blocks are streamed and what that copies; then the README's
    table."""
    print(f"What fits, per card (predicted peak of live tensors + {gib(RESERVE)} GiB kept free; streaming copies at "
          f"{PCIE / 1e9:.0f} GB/s, an upper bound on the time it adds: prefetching overlaps it with compute)\n")
    print("| model | job | blocks | resident peak | " + " | ".join(f"{c} GB" for c in CARDS) + " |")
    print("|---|---|---|---|" + "---|" * len(CARDS))
    for name, (cfg, vcfg) in MODELS.items():
        for (job, (_, passes)), blocks in itertools.product(JOBS.items(), BLOCKS):
            cells = []
            for got in plan_cells(name, job, blocks):
                if got is None:
                    cells.append("does not fit")
                elif got[1] == 0:
                    cells.append("resident")
                else:
                    moved = got[1] * passes
                    cells.append(f"stream {cfg.depth - got[0]} of {cfg.depth} blocks ({moved / 1e9:.0f} GB copied, "
                                 f"≤ +{moved / PCIE:.1f} s)")
            print(f"| {name} | {job} | {blocks} | {gib(peak_of(name, job, blocks))} GiB | " + " | ".join(cells) + " |")
    print("\nREADME:\n\n" + readme_table())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="measure scaled-down runs on the CPU and compare")
    parser.add_argument("--plan", action="store_true", help="what fits on 8 / 12 / 16 / 24 GB cards, and how")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    check() if args.check else plan() if args.plan else predict()
