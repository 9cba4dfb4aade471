"""Every flag of the command line, declared once. A default left to the model (None here) is stated in its help by
var_core.defaults.describe, and the method's defaults by TrainConfig's own fields, so --help cannot promise another
value than the code uses."""
from __future__ import annotations

import argparse
from dataclasses import fields

from .. import defaults
from .. import fp8
from ..checkpoint import DTYPES
from ..pruning import Pruning
from ..sampling import KEEP_SCALES
from ..switti.family import RELEASE_WINDOW as SWITTI_WINDOW
from ..tuning import distributed
from ..tuning.config import TrainConfig
from ..tuning.delta import MODES
from ..tuning.losses import ScaleWeights

DESCRIPTION = "Command line: python -m var_core {sample,train,train-many,convert,demo} ...  (python -m var_core " \
              "<command> -h for the flags)."
DTYPE_HELP = ("precision of the transformer blocks (default: bf16 on a GPU, fp32 on the CPU); fp8: their linear weights "
              "stored as fp8 e4m3 with a scale per row and computed in bf16, half of bf16's memory")


def own(kind: str, key: str) -> str:
    """'default: the model's own (…)' for a setting left to the model."""
    return f"default: the model's own ({defaults.describe(kind, key)})"


def method_default(name: str) -> str:
    """'default X' of a TrainConfig field."""
    value = {f.name: f.default for f in fields(TrainConfig)}[name]
    return f"default {value:g}" if isinstance(value, float) else f"default {value}"


def add_model_arguments(p: argparse.ArgumentParser, jobs: bool = False) -> None:
    """--model, --vae, --text-encoder, --device, --dtype: the same for every command that runs a model."""
    given = " (a job may give its own)" if jobs else ""
    p.add_argument("--model", default=None, help="the transformer: Infinity's .pth or .safetensors, or Infinity-8B's "
                   "folder of shards with model.safetensors.index.json; a Switti folder (config.json + "
                   "model.safetensors); a VAR var_dNN.pth (default: the embedded toy model, with its --vae and "
                   f"--text-encoder){given}")
    p.add_argument("--vae", default=None, help="the VAE released with the transformer (.pth or .safetensors; "
                   f"Switti's: the VQVAE-Switti folder){given}")
    p.add_argument("--text-encoder", default=None, help=f"the text encoder: a flan-t5-xl folder or an encoder "
                   f".safetensors file (Switti: the CLIP-L folder; VAR: none){given}")
    p.add_argument("--text-encoder-2", default=None, help=f"Switti's second text encoder: the OpenCLIP-bigG "
                   f"folder{given}")
    p.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    p.add_argument("--dtype", choices=fp8.DTYPES, default=None, help=DTYPE_HELP)
    p.add_argument("--stream-blocks", action="store_true",
                   help="keep the transformer's blocks in CPU memory and copy each to the device as it runs, for a "
                        "card that cannot hold the whole model: the same images, slower (docs/benchmarks.md)")


def add_train_arguments(t: argparse.ArgumentParser) -> None:
    """The flags of `train` (and the settings a job of `train-many` may give)."""
    add_model_arguments(t)
    t.add_argument("--images", required=True, help="folder of 1-N photos of the subject (any size/mode)")
    t.add_argument("--class", dest="class_word", default=None,
                   help="the subject's class word, e.g. dog (required unless --resume)")
    t.add_argument("--out", required=True, help="subject file to write (.safetensors)")
    t.add_argument("--token", default=None, help=f"placeholder token written in prompts ({method_default('token')})")
    t.add_argument("--captions", action="store_true", help="use name.txt beside each image as its prompt "
                   "(must contain the token; e.g. for generated proxy images)")
    t.add_argument("--mode", choices=MODES, default=None, help="lora: low-rank deltas; full: ARBooth's full deltas; "
                   f"none: placeholder vectors only ({method_default('mode')})")
    t.add_argument("--groups", default=None, help="layer groups to tune, e.g. ca,ffn or all (default: the family's, "
                   "ARBooth's ca,ffn on Infinity)")
    t.add_argument("--blocks", default=None, help="block range, e.g. 0-15 (default all)")
    t.add_argument("--rank", type=int, default=None, help=f"LoRA rank ({method_default('rank')})")
    t.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    t.add_argument("--vectors", type=int, default=None, help="learned placeholder vectors (0 = none; "
                   f"{method_default('placeholder_vectors')})")
    t.add_argument("--steps", type=int, default=None, help="optimizer steps; " + own("tuning", "steps"))
    t.add_argument("--batch-size", type=int, default=None, help=f"images per step ({method_default('batch_size')})")
    t.add_argument("--lr", type=float, default=None, help="learning rate; " + own("tuning", "lr"))
    t.add_argument("--embedding-lr", type=float, default=None, help="the placeholder vectors' learning rate; "
                   + own("tuning", "embedding_lr"))
    t.add_argument("--warmup", type=int, default=None, help=f"linear warm-up steps ({method_default('warmup_steps')})")
    t.add_argument("--weight-decay", type=float, default=None,
                   help=f"AdamW weight decay on the delta ({method_default('weight_decay')})")
    t.add_argument("--grad-clip", type=float, default=None, help=f"max gradient norm (0 = off; "
                   f"{method_default('grad_clip')})")
    t.add_argument("--checkpointing", choices=["auto", "on", "off"], default=None,
                   help="gradient checkpointing: recompute activations in the backward pass (less memory, slower); "
                        "default auto: only when a step would not fit in the device's free memory without it")
    t.add_argument("--no-checkpointing", dest="checkpointing", action="store_const", const="off",
                   help=argparse.SUPPRESS)  # the earlier spelling of --checkpointing off
    t.add_argument("--pn", default=None, help="training resolution preset (0.25M = 512², 1M = 1024²); "
                   + own("tuning", "pn"))
    t.add_argument("--aspect", default=None, help=f"h/w of the training pictures ({method_default('aspect')})")
    t.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips")
    t.add_argument("--flip-prob", type=float, default=None, help="bitwise self-correction strength in [0, 1) "
                   f"(0 = off; {method_default('flip_prob')})")
    w = ScaleWeights()
    t.add_argument("--coarse-weight", type=float, default=None,
                   help=f"loss weight of the coarse scales (default {w.coarse:g})")
    t.add_argument("--fine-weight", type=float, default=None,
                   help=f"loss weight of the other scales (default {w.fine:g})")
    t.add_argument("--coarse-fraction", type=float, default=None,
                   help=f"the first this share of the scales are coarse (default {w.coarse_fraction:.4g}: ARBooth's "
                        f"8 of 13 at 1024², 3 of 5 at 128²)")
    t.add_argument("--scale-weights", default=None, help="explicit per-scale loss weights, comma separated")
    t.add_argument("--prior-weight", type=float, default=None, help="prior distillation weight λ (0 = off; "
                   f"{method_default('prior_weight')})")
    t.add_argument("--prior-prompt", default=None, help=f"the class prompt ({method_default('prior_prompt')}, "
                   "ARBooth's); {article} is a or an")
    t.add_argument("--prior-cfg", type=float, default=None,
                   help=f"1 (ARBooth's; {method_default('prior_cfg')}): keep the base's conditional prediction on "
                        "unguided class samples; e.g. the model's CFG: keep its guided prediction, on samples drawn "
                        "with that guidance")
    t.add_argument("--prior-samples", type=int, default=None, help="class samples the teacher draws once and reuses "
                   f"(0 = fresh ones every step; {method_default('prior_samples')})")
    t.add_argument("--prior-kl", choices=["bit", "token"], default=None,
                   help="bit (default): each bit its own distribution; token: ARBooth's softmax over a token's whole "
                        "logit vector")
    t.add_argument("--separate-steps", action="store_true", default=None,
                   help="ARBooth's two optimizer steps per iteration")
    t.add_argument("--seed", type=int, default=None, help=f"training seed ({method_default('seed')})")
    t.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default %(default)s)")
    t.add_argument("--keep-state", action="store_true",
                   help="keep OUT.state.safetensors (optimizer moments, random streams: about twice the subject's "
                        "size) after a finished run, to continue it exactly with more --steps later (default: it is "
                        "kept only when training stops early; a finished subject resumes from its own file)")
    t.add_argument("--resume", default=None, help="subject file to continue from, with its own settings (only "
                   "--steps may change) and, if its .state.safetensors is beside it, exactly where it stopped")
    t.add_argument("--save-dtype", choices=DTYPES, default=None, help="e.g. bf16 halves a full-delta file")
    t.add_argument("--fsdp", action="store_true",
                   help="under torchrun: split the frozen base's blocks over the processes (FSDP) instead of a whole "
                        "copy on each, for a base one GPU cannot hold (Infinity-8B on 24-40 GB); LoRA only")
    t.add_argument("--rank-timeout", type=float, default=distributed.SILENCE, metavar="SECONDS",
                   help="under torchrun: stop every process when one has given no sign of life for this long (it "
                        "died, hangs or lost its node) (default %(default)g)")
    t.add_argument("--overwrite", action="store_true")


def training_settings(args) -> dict:
    """The TrainConfig settings given on the command line (None = not given: the default, or on --resume, the
    subject file's own)."""
    weights = None
    if any(v is not None for v in (args.coarse_weight, args.fine_weight, args.coarse_fraction, args.scale_weights)):
        d = ScaleWeights()
        weights = ScaleWeights(d.coarse if args.coarse_weight is None else args.coarse_weight,
                               d.fine if args.fine_weight is None else args.fine_weight,
                               d.coarse_fraction if args.coarse_fraction is None else args.coarse_fraction,
                               tuple(float(v) for v in args.scale_weights.split(",")) if args.scale_weights else None)
    given = dict(
        class_word=args.class_word, token=args.token, mode=args.mode,
        groups=tuple(args.groups.split(",")) if args.groups else None, blocks=args.blocks, rank=args.rank,
        alpha=args.alpha, placeholder_vectors=args.vectors, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        embedding_lr=args.embedding_lr, warmup_steps=args.warmup, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, gradient_checkpointing={"on": True, "off": False}.get(args.checkpointing),
        pn=args.pn, aspect=args.aspect, hflip=args.hflip, flip_prob=args.flip_prob, scale_weights=weights,
        prior_weight=args.prior_weight, prior_prompt=args.prior_prompt, prior_cfg=args.prior_cfg,
        prior_samples=args.prior_samples,
        prior_per_bit=None if args.prior_kl is None else args.prior_kl == "bit", separate_steps=args.separate_steps,
        seed=args.seed)
    return {k: v for k, v in given.items() if v is not None}


def build_parser() -> argparse.ArgumentParser:
    from .sample import cmd_sample
    from .tools import cmd_convert, cmd_demo
    from .train import cmd_train, cmd_train_many

    parser = argparse.ArgumentParser(prog="python -m var_core", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    # what every command that runs a model takes
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=int, default=None,
                         help="CPU threads for torch (default: torch's, one per core)")
    s = sub.add_parser("sample", help="generate images from text", parents=[threads])
    add_model_arguments(s)
    s.add_argument("--prompt", action="append", default=[], help="repeat for several prompts (VAR: --class)")
    s.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS",
                   help="VAR: an ImageNet class, its number (0-999) or name, e.g. 'golden retriever'; repeatable")
    s.add_argument("--negative", default=None, help="negative prompt (default: the model's learned null text)")
    s.add_argument("--out", required=True, help="output PNG (numbered when several images)")
    s.add_argument("--batch", type=int, default=1, help="images per prompt (default %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="default %(default)s")
    s.add_argument("--cfg", type=float, default=None, help="classifier-free guidance; " + own("sampling", "cfg"))
    s.add_argument("--tau", type=float, default=None, help="sampling temperature; " + own("sampling", "tau"))
    s.add_argument("--top-k", type=int, default=None, help="top-k filter (0 = off); " + own("sampling", "top_k"))
    s.add_argument("--top-p", type=float, default=None, help="top-p filter; " + own("sampling", "top_p"))
    s.add_argument("--aspect", default="1.0", help="h/w as a number, 'h:w' (e.g. 3:4) or a template key "
                   "(default %(default)s)")
    s.add_argument("--pn", default=None, help="resolution preset: 0.06M, 0.25M, 0.60M, 1M (or 256/512/768/1024); "
                   + own("sampling", "pn"))
    window = SWITTI_WINDOW
    s.add_argument("--cfg-start-scale", type=int, default=None, help="Switti: the first guided scale "
                   f"(default {window['cfg_start_scale']})")
    s.add_argument("--cfg-stop-scale", type=int, default=None, help="Switti: guidance stops at this scale "
                   f"(default {window['cfg_stop_scale']})")
    s.add_argument("--last-scale-temp", type=float, default=None, help="Switti: the scales from --cfg-stop-scale on "
                   "divide their logits by this temperature (default: none)")
    s.add_argument("--more-smooth", action="store_true", default=None, help="Switti: Gumbel-smoothed soft codes "
                   "(no draw) from --smooth-start-scale to the last guided scale")
    s.add_argument("--smooth-start-scale", type=int, default=None, help="Switti: with --more-smooth, the first "
                   f"smoothed scale (default {window['smooth_start_scale']})")
    s.add_argument("--prune-scales", type=int, default=Pruning.scales, help="faster: the N finest scales compute "
                   "only part of their tokens, the rest come from the scale before (0 = off, the exact sampler; "
                   "default %(default)s)")
    s.add_argument("--prune-keep", type=float, default=Pruning.keep, help="with --prune-scales: the fraction of "
                   "each such scale's tokens computed (default %(default)s)")
    s.add_argument("--subject", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="apply a subject file (repeatable); STRENGTH is a number or one number per scale")
    s.add_argument("--init-image", default=None, help="image for variations: its first scales are kept")
    s.add_argument("--keep-scales", type=int, default=KEEP_SCALES, help="with --init-image: how many scales to keep "
                   "(default %(default)s)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_sample)

    t = sub.add_parser("train", help="teach the model a subject from a few photos; writes a small subject file",
                       parents=[threads])
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("train-many", help="train several subjects listed in a jobs file (under torchrun: job i on "
                       "process i %% number of processes); skips jobs whose output exists", parents=[threads])
    m.add_argument("jobs", help="jobs file: JSON lines, a JSON list or TOML [[jobs]]; each job has train's settings "
                   "without the dashes: images, class, out, and optionally token, steps, rank, batch_size, ...")
    add_model_arguments(m, jobs=True)
    m.set_defaults(func=cmd_train_many)

    c = sub.add_parser("convert", help="rewrite a checkpoint as safetensors (validated, optionally bf16)")
    c.add_argument("input", help="checkpoint file, or a folder of safetensors shards (Infinity-8B's release)")
    c.add_argument("output")
    c.add_argument("--kind", choices=["auto", "transformer", "vae"], default="auto")
    c.add_argument("--dtype", choices=DTYPES, default="fp32", help="bf16 halves the transformer's blocks")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_convert)

    d = sub.add_parser("demo", help="teach the embedded toy model a held-out subject from 4 photos and draw it in "
                       "new contexts (one grid PNG; no download)", parents=[threads])
    d.add_argument("--subject", default="guide_dog", help="a bundled example subject (var_core/bundle/subjects; "
                   "default %(default)s)")
    d.add_argument("--steps", type=int, default=None, help="tuning steps; default: the embedded model's own "
                   f"({defaults.embedded_defaults().get('tuning', {}).get('steps')})")
    d.add_argument("--out", default="demo.png", help="default %(default)s")
    d.add_argument("--seed", type=int, default=0, help="default %(default)s")
    d.add_argument("--bundle", default=None, help="another bundle folder (default: the embedded one)")
    d.add_argument("--work", default=None, help="folder for the working files (default: ~/.cache/varbooth/demo, "
                   "reused)")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_demo)
    return parser
