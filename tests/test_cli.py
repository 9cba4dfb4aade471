"""The command line, end to end on tiny random models the project makes itself (and the demo on the embedded model)."""
import re
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from fixture_paths import TINY
from var_core import load_transformer, load_vae
from var_core.cli import main, parse_subject_arg
from var_core.infinity.bitvae import BitVAEConfig
from var_core.checkpoint import save_safetensors_atomic
from var_core.images import to_pil
from toyworld.builders import random_vae, subject_pictures
from var_core.tuning.trainer import state_path
from var_core.tuning import load_subject

ROOT = Path(__file__).resolve().parents[1]


def _sample_args(toy_paths, out, *extra, prompt="a photo of a dog"):
    return ["sample", "--model", str(toy_paths["transformer"]), "--vae", str(toy_paths["vae"]), "--text-encoder",
            str(toy_paths["text_encoder"]), "--prompt", prompt, "--out", str(out), "--pn", "0.06M",
            "--device", "cpu", *extra]


def test_sample_writes_a_png_and_is_reproducible(toy_paths, tmp_path):
    assert main(_sample_args(toy_paths, tmp_path / "a.png", "--seed", "3")) == 0
    assert main(_sample_args(toy_paths, tmp_path / "b.png", "--seed", "3")) == 0
    assert main(_sample_args(toy_paths, tmp_path / "c.png", "--seed", "4", "--aspect", "3:4")) == 0
    a, b, c = (Image.open(tmp_path / f"{n}.png") for n in "abc")
    assert a.size == (256, 256) and c.size == (320, 240)  # 3:4 (h:w) -> template 0.75 at 0.06M: 15x20 tokens, 240x320 px
    assert a.tobytes() == b.tobytes()


def test_streamed_blocks_draw_the_same_picture_and_fsdp_with_streaming_is_refused(toy_paths, tmp_path, capsys,
                                                                                    monkeypatch):
    from var_core import memory
    assert main(_sample_args(toy_paths, tmp_path / "a.png", "--seed", "3")) == 0
    # a device with room for the job, the 1 GiB kept free and two blocks more than the two in flight: those two stay
    from var_core.schedules import scale_schedule
    model = load_transformer(toy_paths["transformer"])
    block = sum(t.numel() * t.element_size() for t in model.blocks[0].state_dict().values())
    job = memory.sampling_bytes(model, scale_schedule(1.0, "0.06M"), 1, guided=True)
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**30 + job + 2 * block)
    assert main(_sample_args(toy_paths, tmp_path / "b.png", "--seed", "3", "--stream-blocks")) == 0
    streamed = int(re.search(r"streaming (\d+) of (\d+) blocks", capsys.readouterr().err)[1])
    assert Image.open(tmp_path / "a.png").tobytes() == Image.open(tmp_path / "b.png").tobytes()
    assert streamed == len(model.blocks) - 2
    assert main(["train", "--images", str(tmp_path), "--class", "dog", "--out", str(tmp_path / "s.safetensors"),
                 "--fsdp", "--stream-blocks"]) == 2
    assert "--fsdp and --stream-blocks" in capsys.readouterr().err


def test_sample_never_overwrites_and_batches_are_numbered(toy_paths, tmp_path, capsys):
    out = tmp_path / "x.png"
    out.write_bytes(b"mine")
    assert main(_sample_args(toy_paths, out)) == 2
    assert out.read_bytes() == b"mine"
    assert "--overwrite" in capsys.readouterr().err
    assert main(_sample_args(toy_paths, tmp_path / "many.png", "--batch", "2", "--negative", "blurry")) == 0
    assert sorted(p.name for p in tmp_path.glob("many_*.png")) == ["many_00.png", "many_01.png"]


def test_variations_keep_the_coarse_scales(toy_paths, tmp_path, monkeypatch):
    import var_core
    from var_core.images import load_image
    from var_core.schedules import pixel_size, scale_schedule

    real, seen = var_core.sample, {}

    def spy(model, vae, text, schedule, **kw):  # the bits the CLI's sampling really drew, scale by scale
        seen["bits"] = real(model, None, text, schedule, **kw)
        return real(model, vae, text, schedule, **kw)
    monkeypatch.setattr(var_core, "sample", spy)
    assert main(_sample_args(toy_paths, tmp_path / "src.png", "--seed", "1")) == 0
    free = seen["bits"]
    assert main(_sample_args(toy_paths, tmp_path / "var.png", "--seed", "9", "--init-image", str(tmp_path / "src.png"),
                             "--keep-scales", "4")) == 0
    schedule = scale_schedule(1.0, "0.06M")
    init = load_vae(toy_paths["vae"]).encode_bits(load_image(tmp_path / "src.png", pixel_size(schedule)), schedule)
    kept, rest = seen["bits"][:4], seen["bits"][4:]
    assert all(torch.equal(k, i) for k, i in zip(kept, init[:4]))  # the init image's coarse scales, exactly
    assert not all(torch.equal(a, b) for a, b in zip(rest, init[4:]))  # the finer ones are sampled anew
    assert not torch.equal(seen["bits"][-1], free[-1])


def test_convert_transformer_and_vae_to_safetensors(tmp_path):
    out = tmp_path / "t.safetensors"
    assert main(["convert", str(TINY / "transformer.pth"), str(out)]) == 0
    a, b = load_transformer(TINY / "transformer.pth"), load_transformer(out)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    half = tmp_path / "t16.safetensors"
    assert main(["convert", str(TINY / "transformer.pth"), str(half), "--dtype", "bf16"]) == 0
    assert half.stat().st_size < 0.75 * out.stat().st_size
    assert load_file(half)["block_chunks.0.module.0.ffn.fc1.weight"].dtype == torch.bfloat16
    assert load_transformer(half).compute_dtype == torch.float32  # on CPU the default compute dtype stays fp32
    vae_out = tmp_path / "v.safetensors"
    assert main(["convert", str(TINY / "vae.pth"), str(vae_out)]) == 0
    va, vb = load_vae(TINY / "vae.pth"), load_vae(vae_out)
    assert all(torch.equal(va.state_dict()[k], v) for k, v in vb.state_dict().items())
    assert main(["convert", str(TINY / "vae.pth"), str(vae_out)]) == 2  # exists: refused


def test_mismatched_vae_is_refused_naming_both_files(toy_paths, tmp_path, capsys):
    vae8 = tmp_path / "vae_d8.safetensors"
    save_safetensors_atomic(random_vae(BitVAEConfig(d=8, base_ch=32)).state_dict(), vae8)
    args = _sample_args(toy_paths, tmp_path / "o.png")
    args[args.index("--vae") + 1] = str(vae8)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert "vae_d8.safetensors" in err and "toy_infinity.safetensors" in err and "8 bits" in err and "16" in err
    assert not (tmp_path / "o.png").exists()


def test_demo_runs_as_a_module_on_the_embedded_model_and_never_overwrites(tmp_path):
    out, work = tmp_path / "demo.png", tmp_path / "w"
    proc = subprocess.run([sys.executable, "-m", "var_core", "demo", "--out", str(out), "--work", str(work),
                           "--steps", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (8 * 128, 3 * (128 + 18)) and f"wrote {out}" in proc.stdout
    assert "tuning" in proc.stderr and "sampling" in proc.stderr  # progress bars
    assert load_subject(work / "demo_subject.safetensors").metadata["training"]["steps_done"] == 3
    again = subprocess.run([sys.executable, "-m", "var_core", "demo", "--out", str(out), "--work", str(work)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr and "tuning" not in again.stderr


def test_an_aspect_outside_the_templates_says_which_template_was_used(toy_paths, tmp_path, capsys):
    assert main(_sample_args(toy_paths, tmp_path / "a.png", "--aspect", "1.9")) == 0
    assert "aspect 1.9 -> template 2.0 (h/w): 176x352 pixels" in capsys.readouterr().err
    assert Image.open(tmp_path / "a.png").size == (176, 352)


def test_without_model_files_sample_says_what_to_give(tmp_path, capsys):
    assert main(["sample", "--model", "x.pth", "--prompt", "a", "--out", str(tmp_path / "f.png")]) == 2
    assert "together" in capsys.readouterr().err


def test_train_then_sample_with_the_subject(toy_paths, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, picture in enumerate(to_pil(subject_pictures(2, 200))):
        picture.convert("L" if i else "RGB").save(photos / f"{i}.jpg")
    out = tmp_path / "dog.safetensors"
    train = ["train", "--model", str(toy_paths["transformer"]), "--vae", str(toy_paths["vae"]), "--text-encoder",
             str(toy_paths["text_encoder"]), "--images", str(photos), "--class", "dog", "--out", str(out),
             "--pn", "0.06M", "--steps", "2", "--rank", "4", "--lr", "1e-2", "--device", "cpu"]
    assert main(train) == 0
    err = capsys.readouterr().err
    assert "prior distillation: drawing 'a photo of dog'" in err  # the first step's wait, said and shown
    assert not state_path(out).exists()  # a finished run keeps only the subject file
    assert main(train) == 2 and "already exists" in capsys.readouterr().err  # never overwritten silently
    assert main(train[:-4] + ["--steps", "3", "--resume", str(out), "--device", "cpu", "--keep-state"]) == 0
    subject = load_subject(out)
    assert subject.metadata["training"]["steps_done"] == 3 and subject.rank == 4 and subject.class_word == "dog"
    assert state_path(out).is_file() and "use it: write '<placeholder> dog'" in capsys.readouterr().out

    def run(name, *extra, prompt="a photo of <placeholder> dog"):
        return main(_sample_args(toy_paths, tmp_path / f"{name}.png", "--seed", "2", *extra, prompt=prompt))
    assert run("base", prompt="a photo of dog") == 0
    assert run("zero", "--subject", f"{out}:0") == 0  # the token in the prompt, read as the class word
    assert run("full", "--subject", str(out)) == 0
    assert run("sched", "--subject", f"{out}:1,1,1,1,0.5,0.5,0") == 0
    base, zero, full = (Image.open(tmp_path / f"{n}.png").tobytes() for n in ("base", "zero", "full"))
    assert zero == base and full != base  # strength 0 is the base model; the trained subject acts
    assert run("bad", "--subject", f"{out}:1,1") == 2
    capsys.readouterr()
    assert main(_sample_args(toy_paths, tmp_path / "b.png", "--seed", "5", "--batch", "2", prompt="a dog")
                + ["--prompt", "a cat"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{tmp_path / 'b_00.png'}: 'a dog' (seed 5, image 1 of 4)",
                     f"{tmp_path / 'b_01.png'}: 'a dog' (seed 5, image 2 of 4)",
                     f"{tmp_path / 'b_02.png'}: 'a cat' (seed 5, image 3 of 4)",
                     f"{tmp_path / 'b_03.png'}: 'a cat' (seed 5, image 4 of 4)"]


def test_subject_argument_parsing():
    assert parse_subject_arg("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_subject_arg("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_subject_arg("C:\\s\\a.safetensors:1,0.5") == ("C:\\s\\a.safetensors", [1.0, 0.5])
    assert parse_subject_arg("C:\\s\\a.safetensors") == ("C:\\s\\a.safetensors", 1.0)


def test_with_a_subject_the_embedded_model_samples_with_its_with_subject_settings(tmp_path, capsys):
    """The settings line says what the run used: the embedded model's own, and while a subject is applied its
    with-subject values (strength 0 is the base, settings included)."""
    from var_core import defaults, embedded
    info = next(i for i in embedded.example_subjects().values() if i["subject"] is not None)
    own = defaults.embedded_defaults()["sampling"]
    for strength, settings in (("1", {**own, **defaults.embedded_defaults()["with_subject"]}), ("0", own)):
        assert main(["sample", "--prompt", f"a photo of {load_subject(info['subject']).token} {info['class_word']}",
                     "--subject", f"{info['subject']}:{strength}", "--out", str(tmp_path / f"{strength}.png")]) == 0
        assert f"cfg {settings['cfg']:g}, tau {settings['tau']:g}," in capsys.readouterr().err
