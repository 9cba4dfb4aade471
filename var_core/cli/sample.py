"""`python -m var_core sample`: text -> images, with subjects applied and variations."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from .. import defaults
import var_core as vc
from ..images import load_image, save_png, to_pil
from ..memory import sampling_bytes
from ..sampling import variation_codes
from ..schedules import template_key
from ..tuning import apply_subjects, arbooth_subject, encode_prompts, load_subject
from .. import fp8
from ..pruning import Pruning
from ..switti.family import RELEASE_WINDOW as SWITTI_WINDOW
from .common import keep_what_fits, load_model, model_files, progress_bar


def _output_paths(out: str, count: int) -> list[Path]:
    out = Path(out)
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:02d}{out.suffix or '.png'}") for i in range(count)]


def cmd_sample(args) -> int:

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = fp8.DTYPES[args.dtype] if args.dtype else None
    model_path, vae_path, encoder_path, embedded = model_files(args, "sample", text=False)
    model = load_model(args, model_path, device, dtype)
    if model.family.name in ("switti", "var"):
        return sample_codebook(args, model, vae_path, encoder_path, device)
    if not encoder_path or not args.prompt or args.classes:
        raise ValueError("sample: an Infinity model needs --text-encoder and --prompt (--class is VAR's).")
    subjects = [(load_subject(path, model), strength) for path, strength in map(parse_subject_arg, args.subject)]
    arbooth = arbooth_subject(model)
    if arbooth is not None and not any(s.token == arbooth.token for s, _ in subjects):
        subjects.append((arbooth, 1.0))  # an ARBooth checkpoint: <placeholder> means its learned vectors
    if subjects:
        model = apply_subjects(model, subjects)
    # the model's own settings (with a subject applied, the file's with-subject ones), under the user's
    settings = defaults.sampling(model, cfg=args.cfg, tau=args.tau, top_k=args.top_k, top_p=args.top_p, pn=args.pn)
    schedule = vc.scale_schedule(args.aspect, settings["pn"])
    template = template_key(args.aspect)
    if template != str(args.aspect).strip():  # say which of the 15 templates an arbitrary ratio became
        h, w = vc.pixel_size(schedule)
        print(f"aspect {args.aspect} -> template {template} (h/w): {w}x{h} pixels", file=sys.stderr)
    prompts = [p for p in args.prompt for _ in range(args.batch)]
    paths = _output_paths(args.out, len(prompts))
    clash = [str(p) for p in paths if p.exists()]
    if clash and not args.overwrite:
        raise FileExistsError(f"Output exists: {', '.join(clash)}; choose another --out or pass --overwrite.")

    vae = vc.load_vae(vae_path, device=device)
    vc.check_compatible(model, vae)
    encoder = vc.load_text_encoder(encoder_path, device=device)
    text = encode_prompts(encoder, prompts, model)  # placeholder tokens of applied subjects become their vectors
    negative = encode_prompts(encoder, [args.negative] * len(prompts), model) if args.negative is not None else None
    encoder.to("cpu")  # T5 is only needed once; give its memory back to the sampler
    del encoder
    forced = None
    if args.init_image:
        image = load_image(args.init_image, vc.pixel_size(schedule)).to(device)
        forced = variation_codes(vae, image, schedule, args.keep_scales, len(prompts))
    print(settings_line(settings, args), file=sys.stderr)
    keep_what_fits(model, sampling_bytes(model, schedule, len(prompts), guided=True))
    images = vc.sample(model, vae, text, schedule, cfg=settings["cfg"], tau=settings["tau"], top_k=settings["top_k"],
                       top_p=settings["top_p"], seed=args.seed, negative=negative, forced_codes=forced,
                       progress=progress_bar(len(schedule), "sampling"), pruning=pruning(args))
    for i, (pil, path) in enumerate(zip(to_pil(images), paths)):
        save_png(pil, path, overwrite=args.overwrite)
        # which prompt it drew, and what redraws it (one seed for the whole batch: same prompts, --batch, --seed)
        print(f"{path}: {prompts[i]!r} (seed {args.seed}, image {i + 1} of {len(prompts)})")
    return 0


def sample_codebook(args, model, vae_path, encoder_path, device) -> int:
    """`sample` on Switti (prompts, two CLIP encoders, its guidance window) or VAR (ImageNet classes)."""
    family = model.family
    window = {k: getattr(args, k) for k in SWITTI_WINDOW if getattr(args, k) is not None}
    unsupported = [flag for flag, given in (("--tau", args.tau is not None), ("--pn", args.pn is not None),
                                             ("--aspect", args.aspect != "1.0")) if given]
    if family.name == "var":
        if args.prompt or not args.classes or encoder_path or window:
            raise ValueError("sample: VAR is class-conditional: give --class (a number 0-999 or an ImageNet name, "
                             "e.g. 'golden retriever'), no --prompt, text encoder or Switti settings.")
        labels = [label for c in args.classes for label in [int(c) if c.isdigit() else c] * args.batch]
        shown = labels
    else:
        if args.classes or not args.prompt or not (encoder_path and args.text_encoder_2):
            raise ValueError("sample: Switti needs --prompt, --text-encoder (CLIP-L) and --text-encoder-2 "
                             "(OpenCLIP-bigG); --class is VAR's.")
        shown = [p for p in args.prompt for _ in range(args.batch)]
    if unsupported:
        raise ValueError(f"sample: {', '.join(unsupported)} {'is' if len(unsupported) == 1 else 'are'} not available "
                         f"for {family.title} models (they generate their own resolution and have no tau).")
    paths = _output_paths(args.out, len(shown))
    clash = [str(p) for p in paths if p.exists()]
    if clash and not args.overwrite:
        raise FileExistsError(f"Output exists: {', '.join(clash)}; choose another --out or pass --overwrite.")
    vae = vc.load_vae(vae_path, device=device)
    vc.check_compatible(model, vae)
    if args.subject:  # named by its token: in --prompt (Switti), or as the --class (VAR)
        model = apply_subjects(model, [(load_subject(path, model), strength)
                                       for path, strength in map(parse_subject_arg, args.subject)])
    negative = None
    if family.name == "switti":
        encoder = vc.load_text_encoder(encoder_path, text_encoder_2=args.text_encoder_2, device=device)
        cond, negative = family.encode(model, encoder, shown), encoder([args.negative or ""])
        del encoder
    else:
        cond = labels
    settings = defaults.sampling(model, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p)
    print(settings_line(settings, args), file=sys.stderr)
    forced = None
    if args.init_image:
        image = load_image(args.init_image, vc.pixel_size(model.schedule)).to(device)
        forced = variation_codes(vae, image, model.schedule, args.keep_scales, len(shown), family)
    keep_what_fits(model, sampling_bytes(model, model.schedule, len(shown), guided=True))
    images = vc.sample(model, vae, cond, cfg=settings["cfg"], top_k=settings["top_k"], top_p=settings["top_p"],
                       seed=args.seed, negative=negative, forced_codes=forced,
                       progress=progress_bar(len(model.schedule), "sampling"), pruning=pruning(args), **window)
    for i, (pil, path) in enumerate(zip(to_pil(images), paths)):
        save_png(pil, path, overwrite=args.overwrite)
        print(f"{path}: {shown[i]!r} (seed {args.seed}, image {i + 1} of {len(shown)})")
    return 0


def pruning(args) -> Pruning:
    return Pruning(args.prune_scales, args.prune_keep)


def parse_subject_arg(value: str):
    """'file.safetensors', 'file.safetensors:0.8' or 'file.safetensors:1,1,1,1,1,1,1,1,0.5,0.5' (per scale)."""
    path, sep, tail = value.rpartition(":")
    if sep:
        try:
            values = [float(v) for v in tail.split(",")]
            return path, values[0] if len(values) == 1 else values
        except ValueError:
            pass  # a ':' that belongs to the path (C:\...)
    return value, 1.0




def settings_line(settings: dict, args) -> str:
    """What the run uses, each setting marked when it is the model's own: 'cfg 4 (own), tau 0.5 (own), ...'."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings.items()) \
        + " (" + (", ".join(k for k in settings if getattr(args, k) is None) or "none") + ": the model's own)"
