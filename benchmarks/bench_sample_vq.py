"""Sampling speed of the codebook families (VAR, Switti) side by side with their official code, on the same weights.

    python benchmarks/bench_sample_vq.py --family var --reference /tmp/var_ref
    python benchmarks/bench_sample_vq.py --family switti --reference /tmp/switti_ref --ref-deps /tmp/refdeps
    python benchmarks/bench_sample_vq.py --family switti --reference /tmp/switti_ref --ref-deps /tmp/refdeps \
        --size tiny --reps 9

--reference is a checkout of github.com/FoundationVision/VAR or github.com/yandex-research/switti (a plain copy of
its files will do); its own classes are imported from it and run unchanged (Switti's `utils/arg_util.py` shells out
to `git rev-parse HEAD` in the working directory at import: run from a git checkout, e.g. this project's root).
Switti's code imports diffusers (for GaussianFourierProjection), typed_argument_parser and pytz, which the project does
not depend on: install them aside (`pip install --target /tmp/refdeps --no-deps diffusers==0.31.0`, `pip install
--target /tmp/refdeps pytz==2024.2 typed_argument_parser==1.10.1`) and pass that folder as --ref-deps (appended to
sys.path, so this environment's own packages win). torchvision is stubbed, as the fixtures did: the pipeline imports it
only for ToPILImage, and return_pil=False is used.

Sizes:
  tiny    the fixture's model (tests/fixtures/{var/tiny_var, switti/tiny_switti}) with its free-sample settings and
          seed; the reference gets the fixture's VAE levels and text widths as the fixture's harness built them.
  scaled  random weights in the release layout, scaled down. VAR: depth 6 (C 384, 6 heads, MLP 4C), 1000 classes,
          V 4096, Cvae 32, 256² (patch_nums 1..16); Switti: depth 4 (C 256, 4 heads of 64, SwiGLU), V 4096, Cvae 32,
          CLIP-L + bigG widths (context 2048, pooled 1280, T 77), Switti-512's grid (1..32). VQ-VAE: the release's
          levels (ch_mult 1,1,2,2,4) at base width 32 (the release's is 160). Release sampling defaults: VAR cfg 4,
          top-k 900, top-p 0.95; Switti cfg 6, top-k 400, top-p 0.95, guidance on scales 0-9.
  scaled1024  (Switti) depth 2 (C 128, 2 heads of 64) on Switti-1024's 14-scale grid (1..64), the same VAE at
          1024²: the last 4 scales run without guidance, as the release does.

Both sides are loaded from the same files: ours with var_core.load_transformer / load_vae, the reference's classes
with load_state_dict(strict=True). Prompts are random CLIP-shaped features (the text encoders are not timed: the
reference's encode_prompt is replaced by one returning them). Before timing, one untimed run of each side with the
same seed compares the codes drawn at every scale and the images; where codes differ, ours is re-run forced to the
reference's codes and the logits the reference sampled from are compared, so the reason is printed. Timing: each
repetition runs both sides once, alternating which goes first; the ratio is the median of the per-repetition ratios
ours / reference, of wall-clock and of process CPU time (steadier on a shared machine). The VAE decode is included
in both (--skip-decode: left out of both). CPU, fp32, one thread by default (--threads); no timing is asserted
anywhere.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import var_core  # noqa: E402
from var_core.switti.model import PATCH_NUMS, Switti, SwittiConfig  # noqa: E402
from var_core.var.model import VAR, VARConfig  # noqa: E402
from var_core.vq.vae import VQVAE, VQVAEConfig  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
VAR_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
SIZES = {
    "var": {"scaled": dict(depth=6, vae_ch=32, batch=2)},
    "switti": {"scaled": dict(depth=4, reso=512, vae_ch=32, batch=2),
               "scaled1024": dict(depth=2, reso=1024, vae_ch=32, batch=1)},
}


# --------------------------------------------------------------------------------------------- random weights
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded random values where the release init leaves zeros or ones (the fixtures' rules: linear weights
    N(0, g²/fan_in) with g 0.7 for AdaLN and 3 for the head, biases N(0, 0.05²), norm gains U(0.6, 1.4), embeddings
    N(0, 0.5²); VAE convs N(0, g²/fan_in) with g 0.6 on each residual branch's last conv, codebook N(0, 0.5²)), so no
    gate is ~0, no norm is an identity and the logits are far from uniform."""
    g = torch.Generator().manual_seed(seed)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=g) * std)

    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.dim() >= 2 and ("quantize.embedding" in name or name.endswith("_emb.weight")
                                 or "lvl_embed" in name or "pos_" in name):
                normal(p, 0.5)
            elif p.dim() >= 2:
                gain = 0.7 if "ada_lin" in name else 3.0 if name.startswith("head.") else \
                    0.6 if ("conv2" in name or "proj_out" in name) else 1.0
                normal(p, gain / math.sqrt(p[0].numel()))
            elif name.endswith("scale_mul_1H11"):
                p.copy_(math.log(4.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif "crop_embed" in name:
                normal(p, 1.0)
            elif "crop_cond_scales" in name:
                normal(p, 0.5)
            elif leaf == "weight" and p.dim() == 1:  # RMSNorm / GroupNorm gains
                p.copy_(0.6 + 0.8 * torch.rand(p.shape, generator=g))
            else:  # biases, q_bias / v_bias
                normal(p, 0.1 if "ada_lin" in name else 0.05)
    return module


def make_var_files(folder: Path, depth: int, vae_ch: int) -> tuple[Path, Path]:
    """var_d{depth}.pth (a flat state dict, as released) and vae_ch{ch}v4096z32.pth."""
    C = 64 * depth
    cfg = VARConfig(depth=depth, embed_dim=C, num_heads=depth, mlp_hidden=4 * C, patch_nums=VAR_256)
    model = randomize_(VAR(cfg), seed=1)
    vae = randomize_(VQVAE(VQVAEConfig(ch=vae_ch, vocab_hit_rows=len(VAR_256))), seed=2)
    paths = folder / f"var_d{depth}.pth", folder / f"vae_ch{vae_ch}v4096z32.pth"
    torch.save(model.state_dict(), paths[0])
    torch.save(vae.state_dict(), paths[1])
    return paths


def make_switti_folders(folder: Path, depth: int, reso: int, vae_ch: int, use_ar: bool) -> tuple[Path, Path]:
    """transformer/ and vae/ as SwittiHF / VQVAEHF's PyTorchModelHubMixin write them (config.json +
    model.safetensors); the transformer's config holds the release keys only (width 64·depth, depth heads,
    patch_nums from reso), the VAE's adds ch_mult and v_patch_nums (the release class hard-codes 1,1,2,2,4)."""
    from safetensors.torch import save_file
    cfg = SwittiConfig(depth=depth, reso=reso, use_ar=use_ar)
    model = randomize_(Switti(cfg), seed=3)
    pn = list(PATCH_NUMS[reso])
    vae = randomize_(VQVAE(VQVAEConfig(ch=vae_ch, vocab_hit_rows=len(pn))), seed=4)
    t, v = folder / "transformer", folder / "vae"
    for f, m, config in ((t, model, dict(depth=depth, rope=True, rope_theta=10000, rope_size=128, use_swiglu_ffn=True,
                                          use_ar=use_ar, use_crop_cond=True, reso=reso)),
                         (v, vae, dict(vocab_size=4096, z_channels=32, ch=vae_ch, ch_mult=[1, 1, 2, 2, 4],
                                       test_mode=True, share_quant_resi=4, v_patch_nums=pn, reso=reso))):
        f.mkdir()
        (f / "config.json").write_text(json.dumps(config))
        save_file({k: x.contiguous() for k, x in m.state_dict().items()}, f / "model.safetensors")
    return t, v


# --------------------------------------------------------------------------------------------- the reference
def import_reference(checkout: str, deps: str | None, family: str):
    """The checkout's `models` package (and `dist`), imported as its own code expects."""
    if deps:
        sys.path.append(deps)
    if family == "switti":
        # imported before torchvision's stub, so neither takes the stub for a real torchvision
        import diffusers.models.embeddings  # noqa: F401
        import transformers  # noqa: F401
        from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

        def stub(name, **attrs):
            m = types.ModuleType(name)
            m.__spec__ = importlib.machinery.ModuleSpec(name, None)
            m.__dict__.update(attrs)
            sys.modules.setdefault(name, m)
            return sys.modules[name]
        stub("torchvision").transforms = stub("torchvision.transforms", ToPILImage=object)
    sys.path.insert(0, os.path.abspath(checkout))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import models  # noqa: F401
        if family == "switti":
            import models.pipeline  # noqa: F401
            import models.switti  # noqa: F401
        else:
            import models.var  # noqa: F401
    return sys.modules["models"]


def reference_vae(models, vae_sd: dict, ch: int, ch_mult, V: int, Cvae: int, patch_nums):
    from models.basic_vae import Decoder, Encoder
    from models.vqvae import VQVAE as RefVQVAE
    vae = RefVQVAE(vocab_size=V, z_channels=Cvae, ch=ch, test_mode=True, share_quant_resi=4,
                   v_patch_nums=tuple(patch_nums))
    if tuple(ch_mult) != (1, 1, 2, 2, 4):  # the fixtures' harness: the reference's own Encoder/Decoder, rebuilt
        dd = dict(dropout=0.0, ch=ch, z_channels=Cvae, in_channels=3, ch_mult=tuple(ch_mult), num_res_blocks=2,
                  using_sa=True, using_mid_sa=True)
        vae.encoder, vae.decoder = Encoder(double_z=False, **dd), Decoder(**dd)
    vae.load_state_dict(vae_sd, strict=True)
    return vae.eval().requires_grad_(False)


def load_sd(path: Path) -> dict:
    if path.is_dir():
        from safetensors.torch import load_file
        return load_file(path / "model.safetensors")
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------- one family
class VARCase:
    def __init__(self, size: str, args, workdir: Path):
        if size == "tiny":
            fx = FIXTURES / "var" / "tiny_var"
            meta = json.loads((fx / "meta.json").read_text())
            t_path, v_path = fx / meta["files"]["transformer"], fx / meta["files"]["vae"]
            fs = meta["free_sample"]
            self.settings = dict(cfg=fs["cfg"], top_k=fs["top_k"], top_p=fs["top_p"])
            self.seed = fs["seed"]
            from safetensors.torch import load_file
            self.labels = load_file(fx / "case.safetensors")["labels"]
        else:
            s = SIZES["var"][size]
            t_path, v_path = make_var_files(workdir, s["depth"], s["vae_ch"])
            self.settings = dict(cfg=4.0, top_k=900, top_p=0.95)  # the release demo's
            self.seed = args.seed
            self.labels = torch.tensor([207, 360, 387, 974, 88, 979, 417, 279][:args.batch or s["batch"]])
        self.model = var_core.load_transformer(t_path, device="cpu", dtype=torch.float32)
        self.vae = var_core.load_vae(v_path, device="cpu", dtype=torch.float32)
        c, vc = self.model.config, self.vae.config
        self.describe = (f"VAR depth {c.depth}, C {c.embed_dim}, {c.num_heads} heads, V {c.vocab_size}, Cvae {c.Cvae}, "
                         f"patch_nums {list(c.patch_nums)}, VAE ch {vc.ch} ch_mult {list(vc.ch_mult)}; batch "
                         f"{len(self.labels)}, {self.settings}")
        models = import_reference(args.reference, args.ref_deps, "var")
        from models.var import VAR as RefVAR
        rvae = reference_vae(models, load_sd(v_path), vc.ch, vc.ch_mult, vc.vocab_size, vc.Cvae, c.patch_nums)
        with contextlib.redirect_stdout(io.StringIO()):
            ref = RefVAR(rvae, num_classes=c.num_classes, depth=c.depth, embed_dim=c.embed_dim,
                         num_heads=c.num_heads, mlp_ratio=c.mlp_hidden / c.embed_dim, norm_eps=c.norm_eps,
                         shared_aln=c.shared_aln, attn_l2_norm=c.attn_l2_norm, patch_nums=tuple(c.patch_nums))
        ref.load_state_dict(load_sd(t_path), strict=True)
        self.ref = ref.eval().requires_grad_(False)
        self.ref_module = sys.modules["models.var"]
        self.batch = len(self.labels)

    def ours(self, **extra):
        return var_core.sample(self.model, self.vae, self.labels, seed=self.seed, **self.settings, **extra)

    def reference(self):
        s = self.settings
        return self.ref.autoregressive_infer_cfg(B=self.batch, label_B=self.labels.clone(), g_seed=self.seed,
                                                 cfg=s["cfg"], top_k=s["top_k"], top_p=s["top_p"],
                                                 more_smooth=False)


class SwittiCase:
    def __init__(self, size: str, args, workdir: Path):
        P = var_core.PromptEmbeds
        if size == "tiny":
            fx = FIXTURES / "switti" / "tiny_switti"
            meta = json.loads((fx / "meta.json").read_text())
            t_path, v_path = fx / "transformer", fx / "vae"
            fs = meta["free_sample"]
            self.settings = dict(cfg=fs["cfg"], top_k=fs["top_k"], top_p=fs["top_p"])
            self.window = dict(cfg_start_scale=fs["cfg_start_scale"], cfg_stop_scale=fs["cfg_stop_scale"],
                               last_scale_temp=fs["last_scale_temp"])
            self.seed = fs["seed"]
            from safetensors.torch import load_file
            case = load_file(fx / "case.safetensors")
            self.cond = P(case["text_embeds"], case["text_pooled"], case["text_mask"])
            self.null = P(case["null_embeds"], case["null_pooled"], case["null_mask"])
        else:
            s = SIZES["switti"][size]
            t_path, v_path = make_switti_folders(workdir, s["depth"], s["reso"], s["vae_ch"], args.use_ar)
            self.settings = dict(cfg=6.0, top_k=400, top_p=0.95)  # SwittiPipeline.__call__'s defaults
            self.window = dict(cfg_start_scale=0, cfg_stop_scale=10, last_scale_temp=None)
            self.seed = args.seed
            B = args.batch or s["batch"]
            g = torch.Generator().manual_seed(5)
            lengths = [9, 17, 6, 30, 12, 21, 8, 14][:B]
            mask = torch.arange(77)[None] < torch.tensor(lengths)[:, None]
            self.cond = P(torch.randn(B, 77, 2048, generator=g), torch.randn(B, 1280, generator=g), mask)
            self.null = P(torch.randn(1, 77, 2048, generator=g), torch.randn(1, 1280, generator=g),
                          torch.arange(77)[None] < 2)
        self.model = var_core.load_transformer(t_path, device="cpu", dtype=torch.float32)
        self.vae = var_core.load_vae(v_path, device="cpu", dtype=torch.float32)
        c, vc = self.model.config, self.vae.config
        self.batch = len(self.cond)
        self.describe = (f"Switti{'-AR' if c.use_ar else ''} depth {c.depth}, C {c.embed_dim}, {c.num_heads} heads, "
                         f"V {c.vocab_size}, Cvae {c.Cvae}, context {c.context_dim}/{c.pooled_dim}, patch_nums "
                         f"{list(c.patch_nums)}, VAE ch {vc.ch} ch_mult {list(vc.ch_mult)}; batch {self.batch}, "
                         f"{self.settings}, {self.window}")
        models = import_reference(args.reference, args.ref_deps, "switti")
        from models.basic_switti import RMSNorm
        from models.pipeline import SwittiPipeline
        from models.switti import Switti as RefSwitti
        rvae = reference_vae(models, load_sd(v_path), vc.ch, vc.ch_mult, vc.vocab_size, vc.Cvae, c.patch_nums)
        with contextlib.redirect_stdout(io.StringIO()):
            ref = RefSwitti(Cvae=c.Cvae, V=c.vocab_size, rope=c.rope, rope_theta=c.rope_theta, rope_size=c.rope_size,
                            depth=c.depth, embed_dim=c.embed_dim, num_heads=c.num_heads, norm_eps=1e-6,
                            patch_nums=tuple(c.patch_nums), use_swiglu_ffn=c.use_swiglu_ffn, use_ar=c.use_ar,
                            use_crop_cond=c.use_crop_cond)
        if (c.context_dim, c.pooled_dim) != (ref.context_dim, ref.pooled_embed_size):
            # the fixture harness's text widths: the reference's own module types swapped in
            ref.text_pooler = nn.Linear(c.pooled_dim, ref.D)
            for b in ref.blocks:
                b.cross_attn.to_kv = nn.Linear(c.context_dim, 2 * c.embed_dim)
                b.attention_y_norm = RMSNorm(c.context_dim, eps=1e-6)
        ref.load_state_dict(load_sd(t_path), strict=True)
        self.ref = ref.eval().requires_grad_(False)
        self.pipe = SwittiPipeline(self.ref, rvae, nn.Identity(), nn.Identity(), "cpu")
        # the prompts' features as SwittiPipeline.encode_prompt returns them: [cond; null], additive mask
        T = self.cond.embeds.shape[1]
        bias = lambda m: torch.zeros(m.shape).masked_fill(~m, -torch.inf)  # noqa: E731
        ctx = (torch.cat([self.cond.embeds, self.null.embeds[:, :T].expand(self.batch, -1, -1)]),
               torch.cat([self.cond.pooled, self.null.pooled.expand(self.batch, -1)]),
               torch.cat([bias(self.cond.mask), bias(self.null.mask[:, :T]).expand(self.batch, -1)]))
        self.pipe.encode_prompt = lambda prompt, null_prompt="": ctx
        self.ref_module = sys.modules["models.pipeline"]

    def ours(self, **extra):
        return var_core.sample(self.model, self.vae, self.cond, seed=self.seed, negative=self.null, **self.settings,
                               **self.window, **extra)

    def reference(self):
        s, w = self.settings, self.window
        return self.pipe([""] * self.batch, seed=self.seed, cfg=s["cfg"], top_k=s["top_k"], top_p=s["top_p"],
                         return_pil=False, turn_on_cfg_start_si=w["cfg_start_scale"],
                         turn_off_cfg_start_si=w["cfg_stop_scale"], last_scale_temp=w["last_scale_temp"])


# --------------------------------------------------------------------------------------------- checks and timing
def reference_draws(case):
    """One reference run recording, per scale, the logits it sampled from and the codes it drew."""
    original = case.ref_module.sample_with_top_k_top_p_
    seen = []

    def recording(logits, **kw):
        before = logits.clone()  # the reference masks them in place
        idx = original(logits, **kw)
        seen.append((before, idx[:, :, 0].clone()))
        return idx
    case.ref_module.sample_with_top_k_top_p_ = recording
    try:
        with torch.no_grad():
            image = case.reference()
    finally:
        case.ref_module.sample_with_top_k_top_p_ = original
    return image, seen


def compare(case) -> str:
    ref_image, seen = reference_draws(case)
    image, codes = case.ours(return_codes=True)
    same = [torch.equal(ours.reshape(ref.shape), ref) for ours, (_, ref) in zip(codes, seen)]
    lines = [f"codes: {sum(same)}/{len(same)} scales identical"
             + (f", first difference at scale {same.index(False)} "
                f"({(codes[same.index(False)].reshape(seen[same.index(False)][1].shape) != seen[same.index(False)][1]).float().mean():.1%} of its tokens)"
                if not all(same) else "")]
    lines.append(f"images: largest difference {(image.add(1).mul(0.5) - ref_image).abs().max():.1e} (in [0, 1])")
    if not all(same):
        forced = [c.reshape(-1, *hw) for (_, c), hw in zip(seen, case.model.schedule)]
        _, logits = case.ours(forced_codes=forced, return_logits=True)
        worst = max((a.reshape(b.shape) - b).abs().max().item() for a, (b, _) in zip(logits, seen))
        lines.append(f"forced to the reference's codes, the logits sampled from differ by at most {worst:.1e}")
    return "; ".join(lines)


def time_pairs(case, reps: int, warmup: int):
    """(wall, CPU) seconds per call of each side, {"ours": [...], "ref": [...]} each: every repetition runs both,
    alternating which goes first. CPU time is the process's (all threads): on a machine shared with other work it
    does not count the time the process waits for a core, so it is the steadier of the two."""
    wall, cpu = {"ours": [], "ref": []}, {"ours": [], "ref": []}
    for r in range(warmup + reps):
        order = [("ours", case.ours), ("ref", case.reference)]
        if r % 2:
            order.reverse()
        for name, fn in order:
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                fn()
            if r >= warmup:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    return wall, cpu


def skip_decode(case) -> None:
    """Both sides return a blank image instead of decoding f_hat (the same kind of VQ-VAE decoder on both sides): what
    is left is the transformer and the sampler."""
    blank = lambda fhat: fhat.new_zeros(fhat.shape[0], 3, 1, 1)  # noqa: E731
    case.vae.decode_latent = blank
    (case.pipe.vae if hasattr(case, "pipe") else case.ref.vae_proxy[0]).fhat_to_img = blank


def profile(case, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile as prof
    for name, fn in (("ours", case.ours), ("reference", case.reference)):
        with prof(activities=[ProfilerActivity.CPU]) as p, torch.no_grad():
            fn()
        print(f"\n  profile, {name} (self CPU time, top {top}):")
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def run(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 on the CPU; reference "
          f"{os.path.abspath(args.reference)}")
    rows = []
    for size in args.size.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            case = (VARCase if args.family == "var" else SwittiCase)(size, args, Path(tmp))
            print(f"\n[{size}] {case.describe}", flush=True)
            print("  " + compare(case), flush=True)
            if args.skip_decode:
                skip_decode(case)
            for clock, times in zip(("wall", "CPU"), time_pairs(case, args.reps, args.warmup)):
                ours, ref = times["ours"], times["ref"]
                ratios = [o / r for o, r in zip(ours, ref)]
                row = (size, clock, statistics.median(ours) / case.batch, statistics.median(ref) / case.batch,
                       statistics.median(ratios), min(ratios), max(ratios))
                rows.append(row)
                print(f"  {clock:4} s/image: ours {row[2]:.3f}, reference {row[3]:.3f}; ours/reference median "
                      f"{row[4]:.3f} (per pair {', '.join(f'{x:.3f}' for x in ratios)})", flush=True)
            if args.profile:
                profile(case, args.profile)
    print(f"\n{args.family}, {args.reps} pairs after {args.warmup} warm-up, {args.threads} threads, "
          f"{'VAE decode skipped' if args.skip_decode else 'VAE decode included'}; a batch timed whole, per image here")
    print("| size | clock | ours s/image | reference s/image | ours / reference (median of pairs) | range |")
    print("|---|---|---:|---:|---:|---|")
    for size, clock, o, r, ratio, lo, hi in rows:
        print(f"| {size} | {clock} | {o:.3f} | {r:.3f} | **{ratio:.2f}×** | {lo:.2f}–{hi:.2f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["var", "switti"], required=True)
    p.add_argument("--reference", required=True, metavar="CHECKOUT", help="the official code's checkout")
    p.add_argument("--ref-deps", default=None, metavar="DIR",
                   help="a folder of the reference's extra packages (pip install --target), appended to sys.path")
    p.add_argument("--size", default="tiny,scaled",
                   help="comma-separated: tiny, scaled (and scaled1024 for Switti); default tiny,scaled")
    p.add_argument("--batch", type=int, default=None, help="images per call at the scaled sizes (default 2; 1 at "
                                                           "scaled1024)")
    p.add_argument("--use-ar", action="store_true", help="Switti-AR (causal by scale, KV cache) at the scaled sizes")
    p.add_argument("--reps", type=int, default=5, help="timed pairs (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed pairs first (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed at the scaled sizes (tiny: the fixture's)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: steadier on a shared machine)")
    p.add_argument("--skip-decode", action="store_true",
                   help="time the transformer and sampler alone (both sides' VAE decode replaced by a blank image)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile one call of each side and print its top N ops")
    a = p.parse_args()
    for s in a.size.split(","):
        if s not in ("tiny", *SIZES[a.family]):
            p.error(f"--size {s}: {a.family} has tiny, {', '.join(SIZES[a.family])}")
    run(a)
