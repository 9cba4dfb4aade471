"""The reference ARBooth code (github.com/jiwoogit/ARBooth, a checkout the user gives) run on a var_core model's
weights, one training iteration at a time: the other side of ``bench_train.py --reference``.

One iteration is what the reference's ``train_one_ep`` does per batch: T5 on the instance and class prompts (padded to
their tokenizer length), the placeholder rows substituted, then ``InfinityTrainer.train_step`` — the VAE encodes the
photos, Bitwise Self-Correction, the student's forward and backward with the scale-weighted loss and an optimizer
step, the frozen teacher's class sample (``autoregressive_cls_infer``), the student's forward and backward on it and a
second optimizer step. The model is built as ``load_infinity_for_training`` builds it (its flags, full-block
checkpointing, drop path 0.1, CA + FFN + the placeholder trainable), with our weights loaded into it.

Nothing of the reference is copied: its modules are imported from the checkout. Its training step does not use
flash-attn's kernels on the path taken here except the varlen cross-attention, nor the plotting, logging, video and
image-IO packages it imports at module level; those imports get stand-ins (``install_stand_ins``). The cross-attention
stand-in computes exact softmax attention per sequence, as flash-attn does (no CUDA here).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import types
from types import SimpleNamespace

import torch
import torch.nn.functional as F


def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def varlen_kvpacked_attention(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                              softmax_scale=None, **_):
    """flash_attn_varlen_kvpacked_func's maths: q (Nq, H, c), kv (Nk, 2, H, c), sequences cut by cu_seqlens."""
    out = torch.empty_like(q)
    q, kv = q.float(), kv.float()  # flash-attn takes bf16 and accumulates in fp32
    for i in range(len(cu_seqlens_q) - 1):
        a, b = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        c, d = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        k, v = kv[c:d].unbind(1)
        o = F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                           scale=softmax_scale)
        out[a:b] = o.transpose(0, 1).to(out.dtype)
    return out


def _dense_attention(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_):
    """flash_attn_func's maths (B, L, H, c); not on the path taken here (customized_flash_attn off)."""
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale,
                                       is_causal=causal)
    return o.transpose(1, 2)


def _drop_path(x, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
    """timm's drop path (stochastic depth): whole rows dropped with drop_prob in training."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep if scale_by_keep and keep > 0 else x * mask


class _DropPath(torch.nn.Module):
    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    def forward(self, x):
        return _drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


class _Unused:
    """Stands in for a class the training step never instantiates."""

    def __init__(self, *args, **kwargs):
        pass


def install_stand_ins() -> None:
    """Modules the reference (ARBooth, or the official Infinity it forks) imports at module level and its training
    step and sampler do not need (or cannot have without CUDA). Real packages already installed are left alone."""
    import importlib.util

    def missing(name):
        return importlib.util.find_spec(name.split(".")[0]) is None

    if missing("flash_attn"):
        _module("flash_attn", flash_attn_func=_dense_attention,
                flash_attn_varlen_kvpacked_func=varlen_kvpacked_attention)
    if missing("timm"):
        timm = _module("timm")
        timm.models = _module("timm.models", register_model=lambda f: f)
        timm.models.layers = _module("timm.models.layers", DropPath=_DropPath, drop_path=_drop_path)
        timm.loss = _module("timm.loss", SoftTargetCrossEntropy=_Unused)
    if missing("tap"):
        _module("tap", Tap=object)  # Args keeps its defaults as class attributes
    if missing("pytz"):
        import datetime
        _module("pytz", timezone=lambda name: datetime.timezone.utc)
    if missing("seaborn"):
        _module("seaborn", color_palette=lambda *a, **k: None)
    if missing("matplotlib"):
        mpl = _module("matplotlib")
        mpl.colors = _module("matplotlib.colors", ListedColormap=_Unused)
    if missing("torchvision"):
        tv = _module("torchvision")
        tv.transforms = _module("torchvision.transforms")
        tv.utils = _module("torchvision.utils", make_grid=None)
    for name in ("cv2", "wandb", "imageio"):
        if missing(name):
            _module(name)


def import_reference(checkout: str):
    """The reference's modules (the checkout on sys.path first)."""
    install_stand_ins()
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    from infinity.models.infinity_final import Infinity as RefInfinity
    from infinity.models.bsq_vae import vae as vae_module
    from infinity.utils import arg_util, misc
    from infinity.utils.amp_opt import TextEmbeddingAmpOptimizer
    import booth_trainer_final
    return SimpleNamespace(Infinity=RefInfinity, vae_module=vae_module, arg_util=arg_util, misc=misc,
                           TextEmbeddingAmpOptimizer=TextEmbeddingAmpOptimizer, trainer=booth_trainer_final)


def reference_vae(vae_module, vae):
    """The reference's VAE (``vae_module``: its infinity/models/bsq_vae/vae.py) as load_visual_tokenizer builds it,
    with ``vae``'s weights, at this VAE's base width (vae_model fixes 128, the released width; the golden fixtures
    were made the same way)."""
    vcfg = vae.config
    built = vae_module.AutoEncoder
    vae_module.AutoEncoder = lambda a: built(argparse.Namespace(**{**vars(a), "base_ch": vcfg.base_ch}))
    try:
        return vae_module.vae_model({"vae": {k: v.float() for k, v in vae.state_dict().items()}}, "dynamic", vcfg.d,
                                    2 ** vcfg.d, patch_size=16, encoder_ch_mult=list(vcfg.ch_mult),
                                    decoder_ch_mult=list(vcfg.ch_mult))
    finally:
        vae_module.AutoEncoder = built


def load_weights(net, model, allow_missing=()) -> None:
    """var_core ``model``'s weights (the release names) into the reference's ``net``; refused unless every tensor
    fits, all but ``allow_missing`` of the net's own."""
    missing, unexpected = net.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if k not in allow_missing]:
        raise RuntimeError(f"The weights do not fit the reference model: missing {missing}, unexpected "
                           f"{unexpected}.")


class ReferenceIteration:
    """The reference's training, set up on ``model`` / ``vae`` (var_core's, in the released layout) and ``encoder``
    (var_core.infinity.t5's T5): call ``step()`` for one iteration.

    images: (B, 3, H, W) in [-1, 1]; pn: the resolution preset; lr: the optimizer's learning rate.
    """

    def __init__(self, checkout: str, model, vae, encoder, images: torch.Tensor, class_word: str, pn: str,
                 lr: float = 2.34375e-5):
        ref = import_reference(checkout)
        self.ref = ref
        cfg = model.config
        if model.config.token_patch != 1:
            raise ValueError("The side-by-side runs the 2B layout (no spatial patchify).")
        defaults = {k: getattr(ref.arg_util.Args, k) for k in dir(ref.arg_util.Args) if not k.startswith("_")}
        self.args = args = SimpleNamespace(**defaults)
        args.pn, args.tau, args.bf16 = pn, 0.5, 0
        args.text_channels = cfg.text_channels
        self.vae = reference_vae(ref.vae_module, vae)
        # the transformer, as load_infinity_for_training builds it (2B's flags; this model's sizes)
        prefix = SimpleNamespace(ti_seq_len=args.text_prefix_length)
        reset = torch.nn.Linear.reset_parameters
        torch.nn.Linear.reset_parameters = lambda self: None  # as build_model_optimizer does: weights come loaded
        try:
            net = self._build(cfg, args, prefix, pn)
        finally:
            torch.nn.Linear.reset_parameters = reset
        # its placeholder rows are 2048 wide (flan-t5-xl's width, hard-coded): this model's text width instead
        net.special_token = torch.nn.Parameter(torch.zeros(args.text_prefix_length, cfg.text_channels))
        load_weights(net, model, allow_missing=("special_token",))
        net.train().requires_grad_(False)
        net.special_token.requires_grad_(True)
        for chunk in net.block_chunks:
            for block in chunk.module:
                block.ca.requires_grad_(True)
                block.ffn.requires_grad_(True)
        teacher = copy.deepcopy(net).eval().requires_grad_(False)
        self.net = net
        trainable = [p for p in net.parameters() if p.requires_grad]
        beta0, beta1 = map(float, args.ada.split("_"))
        adamw = torch.optim.AdamW(trainable, lr=lr, weight_decay=0, betas=(beta0, beta1))  # fused: CUDA only
        opt = ref.TextEmbeddingAmpOptimizer(model_name_3letters="txt", mixed_precision=2, optimizer=adamw,
                                            embedding_parameters=trainable, r_accu=args.r_accu, grad_clip=1.0,
                                            enable_grad_clip=False, zero=0)
        self.trainer = ref.trainer.InfinityTrainer(
            is_visualizer=False, device=images.device, raw_scale_schedule=None, resos=None, vae_local=self.vae,
            gpt_wo_ddp=net, gpt=net, gpt_ori=teacher, ema_ratio=0, max_it=10 ** 9, gpt_opt=None, txt_opt=opt,
            label_smooth=0.0, z_loss_ratio=-1, eq_loss=0, xen=False, other_args=args)
        self.metric_lg = ref.misc.MetricLogger()
        self.encoder, self.images = encoder, images
        # T5 as from_pretrained gives it: weights that require grad, so the losses back-propagate into it too (the
        # reference freezes only its embedding table; infinity-arbooth.md, ARBooth's bug 8)
        self.t5 = copy.deepcopy(encoder.model).requires_grad_(True)
        self.t5.get_input_embeddings().weight.requires_grad_(False)
        self.instance = [f"a photo of <placeholder> {class_word}"] * images.shape[0]
        self.prior = [f"a photo of {class_word}"] * images.shape[0]
        self.iteration = 0

    def _build(self, cfg, args, prefix, pn):
        return self.ref.Infinity(
            vae_local=self.vae, text_channels=cfg.text_channels, text_maxlen=cfg.text_maxlen, prefix_config=prefix,
            shared_aln=True, raw_scale_schedule=None, checkpointing="full-block", customized_flash_attn=False,
            fused_norm=True, pad_to_multiplier=128, use_flex_attn=False,
            add_lvl_embeding_only_first_block=args.add_lvl_embeding_only_first_block,
            use_bit_label=args.use_bit_label, rope2d_each_sa_layer=args.rope2d_each_sa_layer,
            rope2d_normalized_by_hw=args.rope2d_normalized_by_hw, pn=pn, apply_spatial_patchify=0,
            inference_mode=False, train_h_div_w_list=[1.0], depth=cfg.depth, embed_dim=cfg.embed_dim,
            num_heads=cfg.num_heads, drop_path_rate=0.1, mlp_ratio=cfg.ffn_hidden / cfg.embed_dim,
            block_chunks=cfg.block_chunks)

    def _encode(self, prompts, placeholder: bool):
        """T5 as train_one_ep runs it each iteration: with autograd, on the whole padded length, the placeholder
        token's output replaced by the learned rows."""
        enc = self.encoder.tokenize(prompts, padding="max_length", tokens=["<placeholder>"] if placeholder else ())
        feats = self.t5(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])["last_hidden_state"].float()
        rows = []
        for b, n in enumerate(enc["attention_mask"].sum(-1).tolist()):
            at = set(enc["token_positions"][b]["<placeholder>"]) if placeholder else set()
            rows.append(torch.cat([self.net.special_token if i in at else feats[b, i:i + 1] for i in range(n)]))
        lens = [r.shape[0] for r in rows]
        cu = F.pad(torch.tensor(lens, dtype=torch.int32).cumsum(0), (1, 0)).to(torch.int32)
        return torch.cat(rows), lens, cu, max(lens)

    def step(self) -> None:
        text = self._encode(self.instance, placeholder=True)
        prior = self._encode(self.prior, placeholder=False)
        self.trainer.train_step(ep=0, it=self.iteration + 1, g_it=self.iteration, stepping=True, clip_decay_ratio=1.0,
                                metric_lg=self.metric_lg, logging_params=False, inp_B3HW=self.images,
                                cls_inp_B3HW=None, text_cond_tuple=text, reg_text_cond_tuple=prior, args=self.args)
        self.iteration += 1

    @torch.no_grad()
    def max_logit_difference(self, model, vae) -> float:
        """The largest |logit| difference between var_core's teacher-forced forward and the reference's on the
        photos, in eval mode without text dropout, with the level embeddings zeroed in copies of both (the reference
        adds them before every chunk, Infinity before the first block only: ARBooth's bug) — what is left is the
        reference's bf16 cross-attention."""
        from var_core.infinity import quantizer
        from var_core.schedules import scale_schedule
        schedule = scale_schedule(1.0, self.args.pn)
        inputs, _ = quantizer.teacher_forcing(vae.encode_latent(self.images), schedule)
        inputs = torch.cat(inputs, 1)
        text = self._encode(self.prior, placeholder=False)
        ours, theirs = copy.deepcopy(model), copy.deepcopy(self.net).eval()
        ours.lvl_embed.weight.zero_()
        theirs.lvl_embed.weight.zero_()
        theirs.cond_drop_rate = 0.0
        a = ours(self.encoder(self.prior), inputs, schedule)
        b = theirs(tuple(t.detach() if torch.is_tensor(t) else t for t in text), inputs,
                   scale_schedule=[(1, h, w) for h, w in schedule])
        return (a.float() - b.float()).abs().max().item()

    @torch.no_grad()
    def vae_seconds(self) -> float:
        """What the VAE encoding of the photos, done in every iteration, takes of it."""
        t0 = time.perf_counter()
        self.vae.encode_for_raw_features(self.images, scale_schedule=None)
        return time.perf_counter() - t0

    def trainable(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)


