"""Our models under ComfyUI's model management: every loader returns a ``VarPatcher`` (a ``ModelPatcher``), so ComfyUI
counts, loads and offloads our transformers, VAEs and text encoders as it does its own, honours --lowvram, --novram,
--highvram, --reserve-vram and "Unload models", and evicts ours when another model needs the GPU.

A node calls ``use(*patchers, memory=...)`` before it computes: ComfyUI frees what the job needs (our library's memory
model) and moves the weights to the load device, and it hands back the var_core objects. Loaders of the same file
share one base (``shared``); an applied subject is a (subject, strength) on a clone, applied as the library's
SubjectView when a node uses the clone, never a copy of the base.
"""
from __future__ import annotations

import logging
import os
import weakref

import torch

import comfy.model_management as mm
import comfy.model_patcher

from var_core.streaming import resident_blocks, stream_blocks
from var_core.tuning import apply_subjects


class VARBoothModel(torch.nn.Module):
    """What a patcher manages: the torch modules of one var_core object (a transformer, a VAE, a text encoder's
    networks) and the object itself, with the plain ``device`` attribute ComfyUI keeps up to date as it moves them."""

    def __init__(self, obj, modules: list[torch.nn.Module], device: torch.device):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)
        self.__dict__["obj"] = obj  # not registered: its weights are counted once, in parts
        self.device = device


class VarPatcher(comfy.model_patcher.ModelPatcher):
    """A var_core object as ComfyUI's model management sees it. ``subjects``: the (subject, strength) applied to this
    clone (Apply Subject), in order."""

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        super().__init__(model, load_device, offload_device, size, weight_inplace_update)
        self.subjects: list = []

    def clone(self):
        n = super().clone()
        n.subjects = list(self.subjects)
        return n

    @property
    def obj(self):
        return self.model.obj

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        # ComfyUI splits a model between devices only where its layers cast their weights on the fly (comfy.ops), and
        # moves a module's own weights only with a full load: ours load whole, or, where ComfyUI offers less memory
        # than the whole transformer needs (--lowvram, --novram, a full card), stream their blocks (streaming.py)
        whole = full_load or not lowvram_model_memory or lowvram_model_memory >= self.model_size()
        if whole or not hasattr(self.obj, "blocks"):
            self._stop_streaming()
            super().load(device_to, 0, force_patch_weights, full_load=True)
            return
        streaming = stream_blocks(self.obj, device_to, resident_blocks(self.obj, lowvram_model_memory))
        held = self.model
        held.device, held.model_lowvram = device_to, True
        held.model_loaded_weight_memory = streaming.device_bytes
        held.current_weight_patches_uuid = self.patches_uuid
        logging.info("VARBooth: %s streams %d of its %d blocks (%.0f MB on the device; %.0f MB were offered, %.0f MB "
                     "needed for the whole model)", type(self.obj).__name__, len(streaming.blocks),
                     len(self.obj.blocks), streaming.device_bytes / 2**20, lowvram_model_memory / 2**20,
                     self.model_size() / 2**20)

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if unpatch_weights:
            self._stop_streaming()
        super().unpatch_model(device_to, unpatch_weights)

    def _stop_streaming(self) -> None:
        if getattr(self.obj, "_streaming", None) is not None:
            self.obj._streaming.close()

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return 0  # nothing can be freed part-way: ComfyUI then unloads the model whole


def devices(kind: str) -> tuple[torch.device, torch.device]:
    """(load, offload) device of a "transformer", "vae" or "text_encoder", as ComfyUI places its own of that kind
    (--cpu, --lowvram, --highvram, --gpu-only decide)."""
    load, offload = {"transformer": (mm.get_torch_device, mm.unet_offload_device),
                     "vae": (mm.vae_device, mm.vae_offload_device),
                     "text_encoder": (mm.text_encoder_device, mm.text_encoder_offload_device)}[kind]
    return torch.device(load()), torch.device(offload())


_SHARED: "weakref.WeakValueDictionary[tuple, VARBoothModel]" = weakref.WeakValueDictionary()


def shared(path: str, settings: tuple, load, modules, load_device, offload_device) -> VarPatcher:
    """A patcher of the object ``load()`` makes from ``path`` with ``settings``: loaded once while any patcher of it
    lives (a second loader of the same, unchanged file gets a clone of the same base); ``modules(obj)`` lists its
    torch modules. The object is loaded onto the offload device: ``use`` moves it when a node computes."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, settings)
    held = _SHARED.get(key)
    if held is None:
        obj = load()
        held = _SHARED[key] = VARBoothModel(obj, modules(obj), offload_device)
    return VarPatcher(held, load_device, offload_device)


def view(p: VarPatcher):
    """The var_core object of ``p`` with its subjects applied, wherever its weights are now."""
    obj = p.obj
    if not p.subjects:
        return obj
    return apply_subjects(obj, [(subject.to(obj.device), strength) for subject, strength in p.subjects])


def use(*patchers: VarPatcher, memory: int = 0, train: bool = False) -> tuple:
    """Load ``patchers`` on their load devices through ComfyUI, which frees ``memory`` bytes more for the job
    (unloading other models as needed), and return their var_core objects (views with their subjects). ``train``: as
    ComfyUI's own trainer, every other model is unloaded first and ours are loaded fully, when they fit with the job;
    when they do not, the transformer streams its blocks."""
    full = False
    device = mm.get_torch_device()
    if train:
        ours = [m for m in mm.current_loaded_models if m.model is not None and any(m.model.is_clone(p) for p in patchers)]
        if device.type != "cpu":
            mm.free_memory(mm.get_total_memory(device), device, keep_loaded=ours)
        needed = sum(p.model_size() for p in patchers) - sum(m.model_loaded_memory() for m in ours) + memory
        full = needed + mm.minimum_inference_memory() <= mm.get_free_memory(device)
    mm.load_models_gpu(list(patchers), memory_required=memory, force_full_load=full)
    return tuple(view(p) for p in patchers)


def unload(p: VarPatcher) -> None:
    """Offload ``p`` now (a model a job needed only at its start), as ComfyUI unloads a model it needs room for."""
    for i, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is not None and p.is_clone(loaded.model):
            mm.current_loaded_models.pop(i).model_unload()
            return
