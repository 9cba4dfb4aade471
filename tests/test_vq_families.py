"""Switti and the class-conditional VAR: loaded from their release layouts, reproducing the official code's outputs
(tests/fixtures/{switti,var}: tiny random models with what the official code computed from them; READMEs there),
refusing what does not fit, and sampling with each family's own controls."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import var_core
from var_core.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SWITTI = FIXTURES / "switti" / "tiny_switti"
VAR = FIXTURES / "var" / "tiny_var"


@pytest.mark.parametrize("fixture", [SWITTI, VAR], ids=["switti", "var"])
def test_the_official_codes_outputs_are_reproduced(fixture):
    """The fixtures' own checker (their tolerances: codes exact, the free sample's codes exact from its seed,
    teacher-forced logits <= 1e-4, ...), run as a user runs it, from the project root."""
    proc = subprocess.run([sys.executable, str(FIXTURES / "vq_parity_check.py"), str(fixture)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].startswith("OK "), proc.stdout + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def switti():
    torch.manual_seed(0)
    model = var_core.load_transformer(SWITTI / "transformer")
    vae = var_core.load_vae(SWITTI / "vae")
    return model, vae, load_file(SWITTI / "case.safetensors")


@pytest.fixture(scope="module")
def var():
    model = var_core.load_transformer(VAR / "var_d2.pth")
    vae = var_core.load_vae(VAR / "vae_ch32v128z8.pth")
    return model, vae, load_file(VAR / "case.safetensors")


def prompts(case, null=False):
    pre = "null_" if null else "text_"
    return var_core.PromptEmbeds(embeds=case[pre + "embeds"], pooled=case[pre + "pooled"], mask=case[pre + "mask"])


def test_each_family_is_recognised_from_its_files(switti, var):
    assert switti[0].family.name == "switti" and var[0].family.name == "var"
    assert var_core.family_of(str(SWITTI / "transformer"), "transformer").name == "switti"
    assert var_core.family_of(str(VAR / "var_d2.pth"), "transformer").name == "var"
    with pytest.raises(CheckpointError, match="is not a VAR transformer checkpoint"):
        var_core.load_transformer(VAR / "vae_ch32v128z8.pth")


def test_a_vae_that_does_not_fit_is_refused_naming_both_files(switti, var):
    with pytest.raises(CheckpointError, match=r"vae_ch32v128z8\.pth.*does not fit.*tiny_switti/transformer.*code "
                                              r"width: VAE 8, transformer 16"):
        var_core.check_compatible(switti[0], var[1])
    with pytest.raises(CheckpointError, match="does not fit"):
        var_core.sample(var[0], switti[1], [3, 7])


def test_each_family_refuses_the_others_condition(switti, var):
    with pytest.raises(ValueError, match="VAR is class-conditional"):
        var_core.sample(var[0], var[1], ["a photo of a dog"])
    with pytest.raises(ValueError, match="Switti is text-conditional.*a class label is VAR's"):
        var_core.sample(switti[0], switti[1], torch.tensor([3]))
    with pytest.raises(ValueError, match="no tau"):
        var_core.sample(var[0], var[1], [3], tau=0.5)
    with pytest.raises(TypeError, match="Switti's"):
        var_core.sample(var[0], var[1], [3], cfg_stop_scale=2)


def test_var_takes_imagenet_class_names_and_refuses_labels_out_of_range(var):
    from var_core.var.family import VAR as family, class_names
    assert len(class_names()) == 1000 and class_names()[207] == "golden retriever"
    model = var[0]
    assert family.condition(model, [3, 10]).tolist() == [3, 10]  # 10 = num_classes: unconditional
    with pytest.raises(ValueError, match=r"whole numbers from 0 to 9 \(10 = no class"):
        family.condition(model, [11])
    with pytest.raises(ValueError, match="not one of its 10 class names"):  # the tiny model has 10 classes
        family.condition(model, ["golden retriever"])


def test_the_sampler_uses_each_familys_own_defaults(switti, var):
    assert var_core.family_of(str(VAR / "var_d2.pth"), "transformer").sampling_defaults(var[0]) == \
        {"cfg": 4.0, "top_k": 900, "top_p": 0.95}
    assert switti[0].family.sampling_defaults(switti[0]) == {"cfg": 6.0, "top_k": 400, "top_p": 0.95}
    # top_k 400 and 900 exceed the tiny codebooks (128 entries): they keep every code, as top_k 0 does
    model, vae, case = var
    a = var_core.sample(model, vae, case["labels"], seed=3, return_codes=True)[1]
    b = var_core.sample(model, vae, case["labels"], seed=3, top_k=0, return_codes=True)[1]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_null_rows_run_only_up_to_the_last_guided_scale(switti):
    """Switti's window (cfg on scales 2-3): scales 0-3 run the prompts and the null prompt, scales 4-5 the prompts
    alone (half the work); the fixture's 'window' run checks that their logits are the official ones."""
    model, vae, case = switti
    calls = []
    step = model.sampling_step

    def counting(state, k, tokens, keep=None):
        out = step(state, k, tokens, keep)
        calls.append(out.shape[0])
        return out
    model.sampling_step = counting
    try:
        var_core.sample(model, vae, prompts(case), negative=prompts(case, null=True), cfg=4.0, cfg_start_scale=2,
                        cfg_stop_scale=4, seed=1)
    finally:
        del model.sampling_step
    assert calls == [4, 4, 4, 4, 2, 2]  # B = 2: guided rows up to scale 3, the conditional rows alone after


def test_the_cli_samples_switti_from_prompts_and_var_from_classes(tmp_path, capsys):
    from PIL import Image

    from var_core.cli import main
    assert main(["sample", "--model", str(SWITTI / "transformer"), "--vae", str(SWITTI / "vae"), "--text-encoder",
                 str(SWITTI / "text_encoder"), "--text-encoder-2", str(SWITTI / "text_encoder_2"), "--prompt",
                 "a red cube", "--batch", "2", "--cfg-stop-scale", "4", "--out", str(tmp_path / "s.png"),
                 "--device", "cpu"]) == 0
    assert main(["sample", "--model", str(VAR / "var_d2.pth"), "--vae", str(VAR / "vae_ch32v128z8.pth"), "--class",
                 "3", "--out", str(tmp_path / "v.png"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "cfg 6, top_k 400, top_p 0.95 (cfg, top_k, top_p: the model's own)" in err  # Switti's release defaults
    assert "cfg 4, top_k 900, top_p 0.95" in err  # VAR's demo defaults
    for name in ("s_00.png", "s_01.png", "v.png"):
        image = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert image.shape == (128, 128, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 100  # not a fill
    assert main(["sample", "--model", str(VAR / "var_d2.pth"), "--vae", str(VAR / "vae_ch32v128z8.pth"),
                 "--prompt", "a dog", "--out", str(tmp_path / "p.png")]) == 2
    assert "VAR is class-conditional: give --class" in capsys.readouterr().err


def test_convert_rewrites_each_familys_files_as_safetensors_that_load_and_sample_alike(tmp_path, var, switti):
    from var_core.cli import main
    outputs = {"var": tmp_path / "var_d2.safetensors", "vae": tmp_path / "vae.safetensors",
               "switti": tmp_path / "Switti", "switti_vae": tmp_path / "VQVAE-Switti"}
    for source, out in ((VAR / "var_d2.pth", outputs["var"]), (VAR / "vae_ch32v128z8.pth", outputs["vae"]),
                        (SWITTI / "transformer", outputs["switti"]), (SWITTI / "vae", outputs["switti_vae"])):
        assert main(["convert", str(source), str(out)]) == 0
    assert (outputs["switti"] / "config.json").read_bytes() == (SWITTI / "transformer" / "config.json").read_bytes()
    model, vae = var_core.load_transformer(outputs["var"]), var_core.load_vae(outputs["vae"])
    assert torch.equal(var_core.sample(model, vae, [3], seed=1), var_core.sample(var[0], var[1], [3], seed=1))
    model, vae, case = var_core.load_transformer(outputs["switti"]), var_core.load_vae(outputs["switti_vae"]), switti[2]
    a = var_core.sample(model, vae, prompts(case), negative=prompts(case, null=True), seed=1)
    b = var_core.sample(switti[0], switti[1], prompts(case), negative=prompts(case, null=True), seed=1)
    assert torch.equal(a, b)
