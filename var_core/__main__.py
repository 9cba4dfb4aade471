"""Command line: python -m var_core {sample,train,train-many,convert,demo} ...  (python -m var_core <command> -h for the flags)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from var_core.checkpoint import DTYPES
from var_core.tuning.delta import MODES



def _bar(total: int, desc: str, unit: str, initial: int = 0, show: bool = True):
    from tqdm import tqdm  # a requirement (transformers needs it too)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not show)


def _progress(total: int, desc: str):
    bar = _bar(total, desc, "scale")

    def update(k, n):
        bar.update(k - bar.n)
        if k == n:
            bar.close()
    return update


def _output_paths(out: str, count: int) -> list[Path]:
    out = Path(out)
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:02d}{out.suffix or '.png'}") for i in range(count)]


def cmd_sample(args) -> int:
    import var_core as vc
    from var_core.schedules import template_key
    from var_core.images import load_image, save_png, to_pil
    from var_core.sampling import variation_bits

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype] if args.dtype else None
    model_path, vae_path, encoder_path, embedded = model_files(args, "sample")
    model = vc.load_transformer(model_path, device=device, dtype=dtype)
    schedule = vc.scale_schedule(args.aspect, args.pn or model.native_preset())
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
    from var_core.tuning import apply_subjects, arbooth_subject, encode_prompts, load_subject
    subjects = [(load_subject(path, model), strength) for path, strength in map(parse_subject_arg, args.subject)]
    arbooth = arbooth_subject(model)
    if arbooth is not None and not any(s.token == arbooth.token for s, _ in subjects):
        subjects.append((arbooth, 1.0))  # an ARBooth checkpoint: <placeholder> means its learned vectors
    if subjects:
        model = apply_subjects(model, subjects)
    encoder = vc.load_text_encoder(encoder_path, device=device)
    text = encode_prompts(encoder, prompts, model)  # placeholder tokens of applied subjects become their vectors
    negative = encode_prompts(encoder, [args.negative] * len(prompts), model) if args.negative is not None else None
    encoder.to("cpu")  # T5 is only needed once; give its memory back to the sampler
    del encoder
    forced = None
    if args.init_image:
        image = load_image(args.init_image, vc.pixel_size(schedule)).to(device)
        forced = variation_bits(vae, image, schedule, args.keep_scales, len(prompts))
    cfg, tau = model.sampling_settings(args.cfg, args.tau)
    print(f"cfg {cfg:g}, tau {tau:g}" + (" (the model's own)" if args.cfg is None and args.tau is None else ""),
          file=sys.stderr)
    images = vc.sample(model, vae, text, schedule, cfg=cfg, tau=tau, top_k=args.top_k,
                       top_p=args.top_p, seed=args.seed, negative=negative, forced_bits=forced,
                       progress=_progress(len(schedule), "sampling"))
    for i, (pil, path) in enumerate(zip(to_pil(images), paths)):
        save_png(pil, path, overwrite=args.overwrite)
        # which prompt it drew, and what redraws it (one seed for the whole batch: same prompts, --batch, --seed)
        print(f"{path}: {prompts[i]!r} (seed {args.seed}, image {i + 1} of {len(prompts)})")
    return 0


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


def training_settings(args) -> dict:
    """The TrainConfig settings given on the command line (None = not given: the default, or on --resume, the
    subject file's own)."""
    from var_core.tuning import ScaleWeights

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


def cmd_train(args, ranks=None) -> int:
    """Train one subject; under torchrun, data parallel over its processes (``ranks``: this process's place; default:
    join the launch's process group, or a single process without one)."""
    from var_core.tuning import distributed

    device = distributed.local_device(args.device)
    if ranks is not None:
        return train_subject(args, device, ranks)
    ranks = distributed.start(device)
    ended = False
    try:
        code = train_subject(args, device, ranks)
        ended = True
        return code
    finally:
        distributed.stop(together=ended)


def train_subject(args, device, ranks) -> int:
    import signal

    import var_core as vc
    from var_core.tuning import (SubjectTrainer, TrainConfig, distributed, folder_captions, image_files, load_subject,
                                 model_defaults, prepare_images)
    from var_core.tuning.trainer import state_path

    out = Path(args.out)
    if distributed.restarted() and not args.resume and out.is_file() and state_path(out).is_file():
        args.resume = str(out)  # torchrun restarted a failed launch: go on from its last checkpoint
    if out.exists() and not args.overwrite and Path(args.resume or "") != out:
        raise FileExistsError(f"'{out}' already exists; choose another --out, --resume it, or pass --overwrite.")
    if not args.resume and not args.class_word:
        raise SystemExit("train: --class is required (the subject's class word, e.g. dog)")
    show = ranks.is_main  # data parallel: rank 0 speaks for all
    settings = training_settings(args)
    model_path, vae_path, encoder_path, embedded = model_files(args, "train")
    dtype = DTYPES[args.dtype] if args.dtype else None
    if args.fsdp:  # loaded on the CPU; only this rank's shards go to its device
        model = vc.load_transformer(model_path, device="cpu",
                                    dtype=dtype or (torch.bfloat16 if device.type == "cuda" else None))
        distributed.shard_base(model, ranks)
    else:
        model = vc.load_transformer(model_path, device=device, dtype=dtype)
    if not args.resume:  # the loaded model's own tuning defaults (the embedded toy model's: the demo's)
        for key, value in model_defaults(model).items():
            settings.setdefault(key, value)
    vae = vc.load_vae(vae_path, device=device)
    vc.check_compatible(model, vae)
    if args.resume:
        saved = load_subject(args.resume, model).metadata.get("training", {})
        config = TrainConfig.resumed(saved, settings.pop("steps", None), **settings)
    else:
        config = TrainConfig(**settings)
    files = image_files(args.images)
    captions = folder_captions(files) if args.captions else None
    images = prepare_images(files, vc.pixel_size(vc.scale_schedule(config.aspect, config.pn)), config.token,
                            config.class_word, captions, require_token=config.placeholder_vectors > 0)
    encoder = vc.load_text_encoder(encoder_path, device=device)
    if args.resume:
        trainer = SubjectTrainer.resume(args.resume, model, vae, encoder, images, config.steps, ranks=ranks)
        if show:
            print(trainer.notes, file=sys.stderr)
    else:
        trainer = SubjectTrainer(model, vae, encoder, images, config, ranks=ranks)
    encoder.to("cpu")
    del encoder
    if show:
        where = f"{ranks.world_size} processes ({device.type}), {config.batch_size} images per step in all" \
            + (", the base's blocks sharded over them (FSDP): {:,} of their {:,} weights on each".format(
                *distributed.block_weights_held(model)) if model.sharded else "") \
            if ranks.world_size > 1 else str(device)
        print(f"training {trainer.num_trainable:,} parameters ({trainer.delta.mode}, groups "
              f"{','.join(config.groups)}, {len(files)} images, {len(trainer.schedule)} scales) on {where}; "
              f"{trainer.checkpointing}", file=sys.stderr)
    if trainer.distills and config.prior_samples > 0:
        prompt = config.class_prompt()
        prior = _bar(config.prior_samples, f"prior distillation: drawing '{prompt}'", "sample", show=show)
        trainer.draw_prior_bank(lambda done, total: prior.update(done - prior.n))
        prior.close()
    start = trainer.step_count

    stop = []

    def on_interrupt(signum, frame):  # first Ctrl-C: finish the step, save, stop; second: stop at once
        if stop:
            signal.default_int_handler(signum, frame)
        stop.append(1)
        print("\ninterrupted: saving after this step (Ctrl-C again to abort)", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    bar = _bar(config.steps, "training", "step", initial=start, show=show)
    def report(p):
        bar.update(p.step - bar.n)
        bar.set_postfix({k: f"{v:.4f}" for k, v in p.parts.items() if k != "lr"})
    try:
        finished = trainer.run(callback=report, should_stop=lambda: bool(stop), checkpoint_path=out,
                               checkpoint_every=args.checkpoint_every,
                               save_dtype=DTYPES[args.save_dtype] if args.save_dtype else None)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    if not show:
        return 0 if finished else 130
    print(f"{'wrote' if finished else 'stopped early; kept'} {out} ({trainer.step_count} steps, "
          f"{out.stat().st_size / 2**20:.1f} MiB)")
    state = state_path(out)
    if finished and not args.keep_state:  # only a stopped run needs it (a finished one resumes from the file)
        state.unlink(missing_ok=True)
    elif state.is_file():
        print(f"kept {state} ({state.stat().st_size / 2**20:.1f} MiB) for an exact --resume; delete it when done")
    if finished:
        models = "" if embedded else f" --model {model_path} --vae {vae_path} --text-encoder {encoder_path}"
        print(f"use it: write '{trainer.delta.token} {config.class_word}' in a prompt, e.g. python -m var_core sample"
              f"{models} --subject {out} --prompt 'a photo of {trainer.delta.token} {config.class_word} on the beach' "
              f"--out subject.png")
    return 0 if finished else 130


def cmd_train_many(args) -> int:
    """Train every subject of a jobs file, each as `train` would; under torchrun, job i on rank i % world size."""
    from var_core.tuning import distributed
    from var_core.tuning.jobs import job_arguments, read_jobs

    job_parser = argparse.ArgumentParser(prog="python -m var_core train (a job of train-many)")
    add_train_arguments(job_parser)
    flags = set(job_parser._option_string_actions)
    common = [a for flag, value in (("--model", args.model), ("--vae", args.vae), ("--text-encoder", args.text_encoder),
                                    ("--device", args.device), ("--dtype", args.dtype)) if value for a in (flag, value)]
    jobs = [common + job_arguments(job, flags) for job in read_jobs(args.jobs)]  # every job checked before any runs
    # (gloo for the summary only: ranks wait at the end for the longest job, hence the long timeout)
    ranks = distributed.start(torch.device("cpu"), timeout_minutes=7 * 24 * 60)
    try:
        mine = []
        for i in range(ranks.rank, len(jobs), ranks.world_size):
            status = _train_job(job_parser, jobs[i], f"job {i + 1}/{len(jobs)} (rank {ranks.rank})")
            mine.append((i, status))
            if status == "stopped":  # Ctrl-C: no further jobs
                break
        results = [mine]
        if ranks.world_size > 1:
            results = [None] * ranks.world_size
            torch.distributed.all_gather_object(results, mine)
    finally:
        distributed.stop()
    statuses = dict(r for part in results for r in part)
    if ranks.is_main:
        for i, argv in enumerate(jobs):
            print(f"job {i + 1}/{len(jobs)} {job_parser.parse_known_args(argv)[0].out}: "
                  f"{statuses.get(i, 'not run (stopped)')}")
    return 0 if all(v.startswith(("done", "skipped")) for v in statuses.values()) and len(statuses) == len(jobs) \
        else 1


def _train_job(parser: argparse.ArgumentParser, argv: list[str], name: str) -> str:
    """Run one job of train-many in this process; returns its status line."""
    import time

    from var_core.tuning.distributed import Ranks
    from var_core.tuning.trainer import state_path

    try:
        args = parser.parse_args(argv)
    except SystemExit:  # argparse said why
        return "failed: invalid settings"
    out = Path(args.out)
    if out.is_file() and not state_path(out).is_file():
        print(f"{name}: {out} exists, skipped", file=sys.stderr)
        return "skipped (exists)"
    if out.is_file():
        args.resume = str(out)  # stopped before it finished: go on exactly where it stopped
    print(f"{name}: {'resuming' if args.resume else 'training'} {out}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        code = cmd_train(args, ranks=Ranks())
    except (Exception, SystemExit) as e:  # a bad job is reported; the others go on
        print(f"{name}: {out} failed: {e}", file=sys.stderr)
        return f"failed: {e}"
    if code != 0:
        return "stopped"
    return f"done in {time.perf_counter() - t0:.1f} s"


def cmd_convert(args) -> int:
    import var_core as vc
    from var_core.checkpoint import read_file, save_safetensors_atomic

    raw = read_file(args.input)
    kind = args.kind if args.kind != "auto" else vc.detect_kind(raw, args.input)
    dtype = DTYPES[args.dtype]
    if kind == "transformer":
        model = vc.load_transformer(raw, dtype=dtype if dtype != torch.float32 else None)
        tensors = dict(model.state_dict())
        if model.special_token is not None:
            tensors["special_token"] = model.special_token
    else:
        tensors = dict(vc.load_vae(raw).state_dict())
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = {"format": f"infinity-{kind}", "source": Path(args.input).name, "var_core": vc.__version__}
    out = save_safetensors_atomic(tensors, args.output, metadata=metadata, overwrite=args.overwrite)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {len(tensors)} tensors, {kind})")
    return 0


def cmd_demo(args) -> int:
    """The main job on the embedded toy model: teach it a held-out subject from 4 photos, draw it in new contexts."""
    from tqdm import tqdm
    from var_core.demo import DemoConfig, run_demo

    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, unit="step", file=sys.stderr))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    work = Path(args.work or default_cache() / "demo")
    work.mkdir(parents=True, exist_ok=True)
    out = run_demo(args.out, DemoConfig(subject=args.subject, steps=args.steps, seed=args.seed), args.bundle,
                   work=work, overwrite=args.overwrite, progress=progress)
    print(f"wrote {out}: the 4 photos, the subject in 4 new contexts, and the plain class prompt before | after")
    return 0


def default_cache() -> Path:
    """One reusable folder for working files: $XDG_CACHE_HOME/varbooth (~/.cache/varbooth)."""
    import os
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "varbooth"


def model_files(args, parser_name: str) -> tuple[str, str, str, bool]:
    """--model/--vae/--text-encoder, or all three from the embedded toy bundle when none is given."""
    given = [args.model, args.vae, args.text_encoder]
    if all(given):
        return (*given, False)
    if any(given):
        raise ValueError(f"{parser_name}: give --model, --vae and --text-encoder together, or none of them for the "
                         f"embedded toy model.")
    from var_core.embedded import BUNDLE, available, bundle_paths
    if not available():
        raise ValueError(f"{parser_name}: give --model, --vae and --text-encoder (this checkout has no embedded toy "
                         f"model in {BUNDLE}; build one with: python -m toyworld pretrain --out {BUNDLE})")
    paths = bundle_paths()
    print("using the embedded toy model (var_core/bundle, 128²); pass --model, --vae and --text-encoder for "
          "another", file=sys.stderr)
    return str(paths["transformer"]), str(paths["vae"]), str(paths["text_encoder"]), True


def add_train_arguments(t: argparse.ArgumentParser) -> None:
    """The flags of `train` (and the settings a job of `train-many` may give)."""
    t.add_argument("--model", default=None, help="Infinity transformer (.pth, .safetensors, or Infinity-8B's "
                   "folder of shards with model.safetensors.index.json; default: the embedded toy model, with its "
                   "--vae and --text-encoder)")
    t.add_argument("--vae", default=None, help="BitVAE (.pth or .safetensors)")
    t.add_argument("--text-encoder", default=None, help="flan-t5-xl folder (or encoder .safetensors file)")
    t.add_argument("--images", required=True, help="folder of 1-N photos of the subject (any size/mode)")
    t.add_argument("--class", dest="class_word", default=None,
                   help="the subject's class word, e.g. dog (required unless --resume)")
    t.add_argument("--out", required=True, help="subject file to write (.safetensors)")
    t.add_argument("--token", default=None, help="placeholder token written in prompts (default <placeholder>)")
    t.add_argument("--captions", action="store_true", help="use name.txt beside each image as its prompt "
                   "(must contain the token; e.g. for generated proxy images)")
    t.add_argument("--mode", choices=MODES, default=None,
                   help="lora: low-rank deltas; full: ARBooth's full deltas; none: placeholder vectors only")
    t.add_argument("--groups", default=None, help="layer groups to tune: sa, ca, ffn or all (default ca,ffn)")
    t.add_argument("--blocks", default=None, help="block range, e.g. 0-15 (default all)")
    t.add_argument("--rank", type=int, default=None, help="LoRA rank (default 16)")
    t.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default = rank)")
    t.add_argument("--vectors", type=int, default=None, help="learned placeholder vectors (0 = none; default 4)")
    t.add_argument("--steps", type=int, default=None,
                   help="optimizer steps (default 500; 150 on the embedded toy model)")
    t.add_argument("--batch-size", type=int, default=None, help="images per step (default 2)")
    t.add_argument("--lr", type=float, default=None, help="default: 1e-4 for lora, 2.34e-5 for full; 1e-3 on the "
                   "embedded toy model")
    t.add_argument("--embedding-lr", type=float, default=None, help="placeholder vectors' lr (default 1e-3; 1e-2 on "
                   "the embedded toy model)")
    t.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default 0)")
    t.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay on the delta (default 0.005)")
    t.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (0 = off, the default)")
    t.add_argument("--checkpointing", choices=["auto", "on", "off"], default=None,
                   help="gradient checkpointing: recompute activations in the backward pass (less memory, slower); "
                        "default auto: only when a step would not fit in the device's free memory without it")
    t.add_argument("--no-checkpointing", dest="checkpointing", action="store_const", const="off",
                   help=argparse.SUPPRESS)  # the earlier spelling of --checkpointing off
    t.add_argument("--pn", default=None, help="training resolution preset (0.25M = 512², 1M = 1024²; default "
                   "0.25M, or 0.015M = 128² for the embedded toy model)")
    t.add_argument("--aspect", default=None, help="h/w of the training pictures (default 1.0)")
    t.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips")
    t.add_argument("--flip-prob", type=float, default=None, help="bitwise self-correction strength in [0, 1) "
                   "(0 = off; default 0.3)")
    t.add_argument("--coarse-weight", type=float, default=None, help="loss weight of coarse scales (default 1.0)")
    t.add_argument("--fine-weight", type=float, default=None, help="loss weight of the other scales (default 0.5)")
    t.add_argument("--coarse-fraction", type=float, default=None,
                   help="the first this share of the scales are coarse (default 8/13: ARBooth's 8 of 13 at 1024², "
                        "3 of 5 at 128²)")
    t.add_argument("--scale-weights", default=None, help="explicit per-scale loss weights, comma separated")
    t.add_argument("--prior-weight", type=float, default=None, help="prior distillation weight λ (0 = off; "
                   "default 0.5)")
    t.add_argument("--prior-prompt", default=None,
                   help="default 'a photo of {class_word}' (ARBooth's); {article} is a or an")
    t.add_argument("--prior-cfg", type=float, default=None,
                   help="1 (default, ARBooth's): keep the base's conditional prediction on unguided class samples; "
                        "e.g. the model's CFG: keep its guided prediction, on samples drawn with that guidance")
    t.add_argument("--prior-samples", type=int, default=None, help="class samples the teacher draws once and reuses "
                   "(0 = fresh ones every step; default 64)")
    t.add_argument("--prior-kl", choices=["bit", "token"], default=None,
                   help="token = ARBooth's softmax over a token's whole logit vector")
    t.add_argument("--separate-steps", action="store_true", default=None,
                   help="ARBooth's two optimizer steps per iteration")
    t.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    t.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    t.add_argument("--keep-state", action="store_true",
                   help="keep OUT.state.safetensors (optimizer moments, random streams: about twice the subject's "
                        "size) after a finished run, to continue it exactly with more --steps later (default: it is "
                        "kept only when training stops early; a finished subject resumes from its own file)")
    t.add_argument("--resume", default=None, help="subject file to continue from, with its own settings (only "
                   "--steps may change) and, if its .state.safetensors is beside it, exactly where it stopped")
    t.add_argument("--save-dtype", choices=DTYPES, default=None, help="e.g. bf16 halves a full-delta file")
    t.add_argument("--device", default=None)
    t.add_argument("--dtype", choices=DTYPES, default=None, help="frozen blocks (default bf16 on GPU)")
    t.add_argument("--fsdp", action="store_true",
                   help="under torchrun: split the frozen base's blocks over the processes (FSDP) instead of a whole "
                        "copy on each, for a base one GPU cannot hold (Infinity-8B on 24-40 GB); LoRA only")
    t.add_argument("--overwrite", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m var_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    # what every command that runs a model takes
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=int, default=None,
                         help="CPU threads for torch (default: torch's, one per core)")
    s = sub.add_parser("sample", help="generate images from text", parents=[threads])
    s.add_argument("--model", default=None, help="Infinity transformer (.pth, .safetensors, or Infinity-8B's "
                   "folder of shards with model.safetensors.index.json; default: the embedded toy model, with its "
                   "--vae and --text-encoder)")
    s.add_argument("--vae", default=None, help="BitVAE (.pth or .safetensors)")
    s.add_argument("--text-encoder", default=None, help="flan-t5-xl folder (or encoder .safetensors file)")
    s.add_argument("--prompt", required=True, action="append", help="repeat for several prompts")
    s.add_argument("--negative", default=None, help="negative prompt (default: the model's learned null text)")
    s.add_argument("--out", required=True, help="output PNG (numbered when several images)")
    s.add_argument("--batch", type=int, default=1, help="images per prompt")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cfg", type=float, default=None, help="classifier-free guidance; default: the model's own "
                   "(its file's cfg metadata, else 4 for Infinity-2B and 3 for Infinity-8B)")
    s.add_argument("--tau", type=float, default=None, help="sampling temperature; default: the model's own "
                   "(its file's tau metadata, else 0.5 for Infinity-2B and 1.0 for Infinity-8B)")
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--top-p", type=float, default=0.97)
    s.add_argument("--aspect", default="1.0", help="h/w as a number, 'h:w' (e.g. 3:4) or a template key")
    s.add_argument("--pn", default=None, help="resolution preset: 0.06M, 0.25M, 0.60M, 1M (or 256/512/768/1024); "
                   "default: the model's own (its file's native_pn metadata: 0.015M = 128² for the "
                   "embedded toy model; else 1M, Infinity's)")
    s.add_argument("--subject", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="apply a subject file (repeatable); STRENGTH is a number or one number per scale")
    s.add_argument("--init-image", default=None, help="image for variations: its first scales are kept")
    s.add_argument("--keep-scales", type=int, default=4, help="with --init-image: how many scales to keep")
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", choices=DTYPES, default=None, help="transformer blocks (default bf16 on GPU)")
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
    m.add_argument("--model", default=None, help="as for train (a job may give its own)")
    m.add_argument("--vae", default=None)
    m.add_argument("--text-encoder", default=None)
    m.add_argument("--device", default=None)
    m.add_argument("--dtype", choices=DTYPES, default=None)
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
    d.add_argument("--subject", default="guide_dog", help="a bundled example subject (var_core/bundle/subjects)")
    d.add_argument("--steps", type=int, default=150, help="tuning steps")
    d.add_argument("--out", default="demo.png")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--bundle", default=None, help="another bundle folder (default: the embedded one)")
    d.add_argument("--work", default=None, help="folder for the working files (default: ~/.cache/varbooth/demo, "
                   "reused)")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
