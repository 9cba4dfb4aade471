"""A real ComfyUI 0.3.75 (installed by tests/comfyui/install.sh into .comfyui/) with this pack in custom_nodes and
tiny model files in a temporary base directory; and an in-process import of the pack's nodes.

Without that install these tests are skipped with the command to run; CI installs it and sets
VARBOOTH_REQUIRE_COMFYUI=1, which turns a missing install into a failure.
"""
from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMFY = ROOT / ".comfyui" / "ComfyUI"
COMFY_PYTHON = ROOT / ".comfyui" / "venv" / "bin" / "python"
PACK = "comfyui-varbooth"


def _require_comfyui():
    missing = [str(p) for p in (COMFY / "main.py", COMFY_PYTHON) if not p.exists()]
    if missing:
        message = f"ComfyUI is not installed ({', '.join(missing)}): run bash tests/comfyui/install.sh"
        if os.environ.get("VARBOOTH_REQUIRE_COMFYUI"):
            pytest.fail(message)
        pytest.skip(message)


# ------------------------------------------------------------------------------------------------ model files
SWITTI = ROOT / "tests/fixtures/switti/tiny_switti"
VAR = ROOT / "tests/fixtures/var/tiny_var"
# Switti's and VAR's tiny fixtures (random weights in the real layouts, 128² output) under the release names their
# templates load, so that the templates run unchanged
RELEASE_NAMES = {"models/switti/Switti": SWITTI / "transformer", "models/vae/VQVAE-Switti": SWITTI / "vae",
                 "models/text_encoders/clip-vit-large-patch14": SWITTI / "text_encoder",
                 "models/text_encoders/CLIP-ViT-bigG-14-laion2B-39B-b160k": SWITTI / "text_encoder_2",
                 "models/var/var_d16.pth": VAR / "var_d2.pth",
                 "models/vae/vae_ch160v4096z32.pth": VAR / "vae_ch32v128z8.pth"}


# The diffusion supervisor of the proxy_tuning_diffusion template, under the names it loads
SUPERVISOR = ("models/checkpoints/v1-5-pruned-emaonly.safetensors", "models/loras/subject_lora.safetensors")


def write_supervisor(base: Path) -> None:
    """A random checkpoint in SD1.5's layout and an empty LoRA (make_sd15.py, run with ComfyUI's Python)."""
    paths = [base / p for p in SUPERVISOR]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(COMFY_PYTHON), str(ROOT / "tests/comfyui/make_sd15.py"), *map(str, paths)], check=True,
                   capture_output=True, timeout=600)


def make_base(base: Path, supervisor: bool = False) -> Path:
    """A ComfyUI base directory: tiny models in the folders users put the real ones in (for the loader and refusal
    tests, and the Switti and VAR templates; with ``supervisor``, the diffusion supervisor's) and an empty input/ (the
    other templates run on the embedded model and its example subjects)."""
    from toyworld.builders import make_random_models, random_vae
    from var_core.infinity.bitvae import BitVAEConfig
    from var_core.checkpoint import save_safetensors_atomic

    for d in ("custom_nodes", "user", "input", "output", "models/infinity", "models/vae", "models/text_encoders",
              "models/var_subjects"):
        (base / d).mkdir(parents=True, exist_ok=True)
    toy = make_random_models(base / "toy")
    shutil.copy(toy["transformer"], base / "models/infinity/toy_infinity.safetensors")
    shutil.copy(toy["vae"], base / "models/vae/toy_bitvae.safetensors")
    shutil.copytree(toy["text_encoder"], base / "models/text_encoders/toy_t5")
    save_safetensors_atomic(random_vae(BitVAEConfig(d=8, base_ch=32)).state_dict(), base / "models/vae/vae_d8.safetensors")
    from fixture_paths import TINY_8B  # Infinity-8B-shaped, as released: a folder of shards and the f8/d14 VAE
    shutil.copytree(TINY_8B / "infinity_8b_weights", base / "models/infinity/infinity_8b_weights")
    shutil.copy(TINY_8B / "vae.pth", base / "models/vae/infinity_vae_d56_f8_14_patchify.pth")
    from toyworld.t5 import make_t5
    make_t5(base / "models/text_encoders/t5_192", d_model=192)  # the fixture's text width
    for name, source in RELEASE_NAMES.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, base / name)
    if supervisor:
        write_supervisor(base)
    os.symlink(ROOT, base / "custom_nodes" / PACK)
    return base


# ------------------------------------------------------------------------------------------------ the server
class Comfy:
    """A running ComfyUI: HTTP helpers and a minimal websocket reader (stdlib only)."""

    def __init__(self, url: str, base: Path, log: Path):
        self.url, self.base, self.log = url, base, log

    def get(self, path: str):
        return json.loads(urllib.request.urlopen(self.url + path, timeout=30).read())

    def post(self, path: str, data=None) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(data or {}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict, client_id: str = "tests") -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id})
        assert status == 200, body
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry["status"].get("completed") is not None:
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s; log: {self.log}")

    def websocket(self, client_id: str) -> "WebSocket":
        return WebSocket(self.url.replace("http://", ""), client_id)


class WebSocket:
    """Reads ComfyUI's JSON messages from /ws (text frames; binary preview frames are skipped)."""

    def __init__(self, host: str, client_id: str):
        h, p = host.split(":")
        self.sock = socket.create_connection((h, int(p)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        header = b""
        while b"\r\n\r\n" not in header:
            header += self.sock.recv(1)
        assert b" 101 " in header.split(b"\r\n")[0], header

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("websocket closed")
            data += chunk
        return data

    def messages(self, timeout: float):
        end = time.time() + timeout
        while time.time() < end:
            b1, b2 = self._exact(2)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            if b1 & 0x0F == 1:
                yield json.loads(payload)

    def close(self):
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_comfy(log: Path, base: Path, args=(), comfy_dir: Path = COMFY):
    """A ComfyUI (of ``comfy_dir``, with the test venv) started with ``args``, serving until the block ends."""
    port = _free_port()
    cmd = [str(COMFY_PYTHON), str(ROOT / "tests/comfyui/launch.py"), "--cpu", "--listen", "127.0.0.1", "--port",
           str(port), "--disable-auto-launch", *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "VARBOOTH_COMFYUI": str(comfy_dir)})
    server = Comfy(f"http://127.0.0.1:{port}", base, log)
    try:
        end = time.time() + 180
        while True:
            try:
                server.get("/object_info/VARBooth_Sampler")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.time() > end:
                    raise RuntimeError(f"ComfyUI did not start:\n{log.read_text()[-4000:]}")
                time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    _require_comfyui()
    base = make_base(tmp_path_factory.mktemp("comfy_base"), supervisor=True)
    with running_comfy(base / "comfyui.log", base, ["--base-directory", str(base)]) as server:
        yield server


# ------------------------------------------------------------------------------------------------ in-process
def _import_model_patcher():
    """comfy.model_patcher (what the pack's models are managed by) imports ComfyUI's model zoo, one of whose files
    imports torchvision at import time; the test venv has none (PyPI's is built for CUDA torch, and transformers would
    import it too). A stand-in module serves that one import and is removed at once: nothing the tests run uses it,
    and transformers, imported later, finds no torchvision."""
    import types
    from importlib.machinery import ModuleSpec
    if importlib.util.find_spec("torchvision") is not None:
        import comfy.model_patcher  # noqa: F401
        return
    stand_ins = {}
    for name in ("torchvision", "torchvision.transforms"):
        stand_ins[name] = sys.modules[name] = types.ModuleType(name)
        stand_ins[name].__spec__, stand_ins[name].__path__ = ModuleSpec(name, None), []
    stand_ins["torchvision"].transforms = stand_ins["torchvision.transforms"]
    try:
        import comfy.model_patcher  # noqa: F401
    finally:
        for name in stand_ins:
            del sys.modules[name]


@pytest.fixture(scope="session")
def pack(tmp_path_factory):
    """The pack's nodes imported in this process the way ComfyUI imports them, with folders in a temporary base."""
    _require_comfyui()
    for module in ("psutil", "einops", "av"):
        if importlib.util.find_spec(module) is None:
            message = f"in-process ComfyUI tests need {module}: pip install psutil einops av"
            pytest.fail(message) if os.environ.get("VARBOOTH_REQUIRE_COMFYUI") else pytest.skip(message)
    sys.path.insert(0, str(COMFY))
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    _import_model_patcher()
    import folder_paths
    base = make_base(tmp_path_factory.mktemp("inprocess_base"))
    folder_paths.models_dir = str(base / "models")
    for name in ("vae", "text_encoders"):
        folder_paths.folder_names_and_paths[name] = ([str(base / "models" / name)],
                                                    folder_paths.folder_names_and_paths[name][1])
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    spec = importlib.util.spec_from_file_location("comfyui_varbooth_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    import asyncio
    extension = asyncio.run(module.comfy_entrypoint())
    nodes = {n.define_schema().node_id: n for n in asyncio.run(extension.get_node_list())}
    module.base, module.node_classes = base, nodes
    return module
