"""Everything the nodes need from ComfyUI itself: model folders, devices, memory, progress and cancel.

Kept in one place so the node files stay a few lines each and nothing else imports ComfyUI internals.
"""
from __future__ import annotations

import os
import re

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths

WEIGHT_EXTENSIONS = {".pth", ".pt", ".safetensors", ".bin", ".sft"}
TRANSFORMERS = "infinity"  # models/infinity: Infinity transformers
SUBJECTS = "var_subjects"  # models/var_subjects: subject files


def register_folders() -> None:
    """models/infinity and models/var_subjects (ComfyUI already has vae and text_encoders)."""
    for name in (TRANSFORMERS, SUBJECTS):
        path = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, path)
        else:
            folder_paths.folder_names_and_paths[name] = ([path], set(WEIGHT_EXTENSIONS))


def list_files(folder: str) -> list[str]:
    return [f for f in folder_paths.get_filename_list(folder) if os.path.splitext(f)[1].lower() in WEIGHT_EXTENSIONS]


def full_path(folder: str, name: str) -> str:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"'{name}' was not found in the models/{folder} folders "
                                f"({', '.join(folder_paths.get_folder_paths(folder))}).")
    return path


def list_text_encoders() -> list[str]:
    """Hugging Face folders (with config.json) under models/text_encoders, listed as 'name/', plus single files."""
    folders = []
    for root in folder_paths.get_folder_paths("text_encoders"):
        if os.path.isdir(root):
            for entry in sorted(os.listdir(root)):
                if os.path.isfile(os.path.join(root, entry, "config.json")):
                    folders.append(entry + "/")
    inside = tuple(folders)
    return folders + [f for f in list_files("text_encoders") if not f.replace(os.sep, "/").startswith(inside)]


def text_encoder_path(name: str) -> str:
    if name.endswith("/"):
        for root in folder_paths.get_folder_paths("text_encoders"):
            if os.path.isfile(os.path.join(root, name, "config.json")):
                return os.path.join(root, name.rstrip("/"))
        raise FileNotFoundError(f"Text encoder folder '{name}' not found in models/text_encoders.")
    return full_path("text_encoders", name)


def safe_name(text: str, default: str) -> str:
    """A file-name-safe version of user text (letters, digits, '_', '-', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or default


def device() -> torch.device:
    """ComfyUI's compute device (honours --cpu)."""
    return mm.get_torch_device()


def offload_device() -> torch.device:
    return mm.text_encoder_offload_device()


def free_memory(nbytes: int = 0) -> None:
    """Ask ComfyUI to unload its own models so ours fit, and empty the allocator cache."""
    dev = device()
    if nbytes:
        mm.free_memory(nbytes, dev)
    mm.soft_empty_cache()


def interrupted() -> bool:
    return mm.processing_interrupted()


def raise_if_interrupted() -> None:
    mm.throw_exception_if_processing_interrupted()


def progress_bar(total: int):
    return comfy.utils.ProgressBar(total)


def output_directory() -> str:
    return folder_paths.get_output_directory()


def subjects_directory() -> str:
    return folder_paths.get_folder_paths(SUBJECTS)[0]


def free_name(folder: str, prefix: str, suffix: str = ".safetensors") -> str:
    """<folder>/<prefix>_00001<suffix>, the first number not taken: nothing earlier is ever overwritten."""
    prefix = safe_name(prefix, "subject")
    i = 1
    while os.path.exists(os.path.join(folder, f"{prefix}_{i:05d}{suffix}")):
        i += 1
    return os.path.join(folder, f"{prefix}_{i:05d}{suffix}")


def checkpoints_directory() -> str:
    """output/varbooth_checkpoints: the running trainings' last good states (and their resumable state files)."""
    return os.path.join(output_directory(), "varbooth_checkpoints")


def list_checkpoints() -> list[str]:
    folder = checkpoints_directory()
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and not f.endswith(".state.safetensors"))

