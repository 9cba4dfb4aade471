"""`python -m var_core train` (one subject; data parallel under torchrun) and `train-many` (a jobs file)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import torch

import var_core as vc
from .. import fp8
from ..checkpoint import DTYPES
from ..defaults import check
from ..tuning import (SubjectTrainer, TrainConfig, distributed, folder_captions, image_files, load_subject,
                      prepare_images)
from ..tuning.distributed import Ranks
from ..tuning.jobs import job_arguments, read_jobs
from ..tuning.memory import training_activation_bytes
from ..tuning.trainer import state_path
from .common import bar, keep_what_fits, load_model, model_files
from .flags import add_train_arguments, training_settings


def cmd_train(args, ranks=None) -> int:
    """Train one subject; under torchrun, data parallel over its processes (``ranks``: this process's place; default:
    join the launch's process group, or a single process without one)."""
    device = distributed.local_device(args.device)
    if ranks is not None:
        return train_subject(args, device, ranks)
    ranks = distributed.start(device, silence=check("--rank-timeout", args.rank_timeout, (0.0,)))
    ended = False
    try:
        code = train_subject(args, device, ranks)
        ended = True
        return code
    finally:
        distributed.stop(together=ended)


def train_subject(args, device, ranks) -> int:
    out = Path(args.out)
    if distributed.restarted() and not args.resume and out.is_file() and state_path(out).is_file():
        args.resume = str(out)  # torchrun restarted a failed launch: go on from its last checkpoint
    if out.exists() and not args.overwrite and Path(args.resume or "") != out:
        raise FileExistsError(f"'{out}' already exists; choose another --out, --resume it, or pass --overwrite.")
    if not args.resume and not args.class_word:
        raise SystemExit("train: --class is required (the subject's class word, e.g. dog)")
    show = ranks.is_main  # data parallel: rank 0 speaks for all
    settings = training_settings(args)
    model_path, vae_path, encoder_path, embedded = model_files(args, "train", text=False)
    dtype = fp8.DTYPES[args.dtype] if args.dtype else None
    if args.fsdp and args.dtype == "fp8":
        raise ValueError("train: --fsdp shards bf16 or fp32 blocks; --dtype fp8 is for one device.")
    if args.fsdp and args.stream_blocks:
        raise ValueError("train: --fsdp and --stream-blocks do not go together (FSDP already keeps only this rank's "
                         "shard of every block on its device); choose one.")
    if args.fsdp:  # loaded on the CPU; only this rank's shards go to its device
        model = vc.load_transformer(model_path, device="cpu",
                                    dtype=dtype or (torch.bfloat16 if device.type == "cuda" else None))
        distributed.shard_base(model, ranks)
    else:
        model = load_model(args, model_path, device, dtype)
    if model.family.name != "var" and not encoder_path:
        raise ValueError(f"train: a {model.family.title} model needs --text-encoder.")
    vae = vc.load_vae(vae_path, device=device)
    vc.check_compatible(model, vae)
    if args.resume:
        saved = load_subject(args.resume, model).metadata.get("training", {})
        config = TrainConfig.resumed(saved, settings.pop("steps", None), **settings)
    else:
        config = TrainConfig(**settings).for_model(model)  # what is not given: the model's own
    files = image_files(args.images)
    captions = folder_captions(files) if args.captions else None
    schedule = model.family.tuning_schedule(model, config.aspect, config.pn)
    images = prepare_images(files, vc.pixel_size(schedule), config.token, config.class_word, captions,
                            require_token=config.placeholder_vectors > 0)
    encoder = vc.load_text_encoder(encoder_path, device=device, text_encoder_2=args.text_encoder_2) \
        if encoder_path else None
    if args.resume:
        trainer = SubjectTrainer.resume(args.resume, model, vae, encoder, images, config.steps, ranks=ranks)
        if show:
            print(trainer.notes, file=sys.stderr)
    else:
        trainer = SubjectTrainer(model, vae, encoder, images, config, ranks=ranks)
    del encoder  # only needed once: its memory goes back to the training
    keep_what_fits(model, training_activation_bytes(model.config, schedule, config.batch_size, model.compute_dtype,
                                                    True))
    if show:
        where = f"{ranks.world_size} processes ({device.type}), {config.batch_size} images per step in all" \
            + (", the base's blocks sharded over them (FSDP): {:,} of their {:,} weights on each".format(
                *distributed.block_weights_held(model)) if model.sharded else "") \
            if ranks.world_size > 1 else str(device)
        print(f"training {trainer.num_trainable:,} parameters ({trainer.delta.mode}, groups "
              f"{','.join(config.groups)}, {len(files)} images, {len(trainer.schedule)} scales) on {where}; "
              f"{trainer.checkpointing}", file=sys.stderr)
        own = [k for k in ("pn", "steps", "lr", "embedding_lr") if k not in settings and not args.resume]
        print(f"settings: resolution {config.pn or vc.pixel_size(trainer.schedule)}, {config.steps} steps, learning rate {config.lr:g}, placeholder "
              f"learning rate {config.embedding_lr:g}" + (f" ({', '.join(own)}: the model's own)" if own else ""),
              file=sys.stderr)
    if trainer.distills and config.prior_samples > 0:
        prompt = config.class_prompt()
        prior = bar(config.prior_samples, f"prior distillation: drawing '{prompt}'", "sample", show=show)
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
    steps = bar(config.steps, "training", "step", initial=start, show=show)

    def report(p):
        steps.update(p.step - steps.n)
        steps.set_postfix({k: f"{v:.4f}" for k, v in p.parts.items() if k != "lr"})
    try:
        finished = trainer.run(callback=report, should_stop=lambda: bool(stop), checkpoint_path=out,
                               overwrite=args.overwrite,
                               checkpoint_every=args.checkpoint_every,
                               save_dtype=DTYPES[args.save_dtype] if args.save_dtype else None)
    finally:
        signal.signal(signal.SIGINT, previous)
        steps.close()
    if not show:
        return 0 if finished else 130
    print(f"{'wrote' if finished else 'stopped early; kept'} {out} ({trainer.step_count} steps, "
          f"{out.stat().st_size / 2**20:.1f} MiB)")
    state = state_path(out)
    if finished and not args.keep_state:  # only a stopped run needs it (a finished one resumes from the file)
        state.unlink(missing_ok=True)
    elif state.is_file():
        print(f"kept {state} ({state.stat().st_size / 2**20:.1f} MiB) for an exact --resume; delete it when done")
    if finished and model.family.name == "var":
        print(f"use it: give its token as the class, e.g. python -m var_core sample --model {model_path} --vae "
              f"{vae_path} --subject {out} --class '{trainer.delta.token}' --out subject.png")
    elif finished:
        models = "" if embedded else f" --model {model_path} --vae {vae_path} --text-encoder {encoder_path}"
        print(f"use it: write '{trainer.delta.token} {config.class_word}' in a prompt, e.g. python -m var_core sample"
              f"{models} --subject {out} --prompt 'a photo of {trainer.delta.token} {config.class_word} on the beach' "
              f"--out subject.png")
    return 0 if finished else 130


def cmd_train_many(args) -> int:
    """Train every subject of a jobs file, each as `train` would; under torchrun, job i on rank i % world size."""
    job_parser = argparse.ArgumentParser(prog="python -m var_core train (a job of train-many)")
    add_train_arguments(job_parser)
    flags = set(job_parser._option_string_actions)
    common = [a for flag, value in (("--model", args.model), ("--vae", args.vae), ("--text-encoder", args.text_encoder),
                                    ("--device", args.device), ("--dtype", args.dtype)) if value for a in (flag, value)]
    common += ["--stream-blocks"] if args.stream_blocks else []
    listed = read_jobs(args.jobs)
    jobs = [common + job_arguments(job, flags) for job in listed]  # every job checked before any runs
    outputs: dict[Path, int] = {}
    for i, job in enumerate(listed):
        out = Path(str(job["out"])).expanduser().resolve()
        if out in outputs:  # the second would overwrite the first's subject, or be skipped as existing
            raise ValueError(f"{args.jobs}: jobs {outputs[out] + 1} and {i + 1} both write '{job['out']}'; give "
                             f"each job its own out.")
        outputs[out] = i
    # (gloo for the summary only: ranks wait at the end for the longest job, hence the long timeout)
    ranks = distributed.start(torch.device("cpu"), timeout_minutes=7 * 24 * 60, silence=None)
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


