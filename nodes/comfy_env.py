"""Everything the nodes need from ComfyUI itself: model folders, progress and cancel (models, devices and memory:
managed.py).

Kept in these two places so the node files stay a few lines each and nothing else imports ComfyUI internals.
"""
from __future__ import annotations

import os
import re

import comfy.model_management as mm
import comfy.utils
import folder_paths

from var_core import embedded
from var_core.checkpoint import reserve_name

WEIGHT_EXTENSIONS = {".pth", ".pt", ".safetensors", ".bin", ".sft"}
TRANSFORMERS = "infinity"  # models/infinity: Infinity transformers
SWITTI = "switti"  # models/switti: Switti's model folders (config.json + model.safetensors)
VAR = "var"  # models/var: the class-conditional VAR's var_d*.pth
SUBJECTS = "var_subjects"  # models/var_subjects: subject files
SUBJECT_EXTENSION = ".safetensors"  # what Load Subject can read (a pickled .pth is never unpickled)


def register_folders() -> None:
    """models/infinity, switti, var and var_subjects (ComfyUI already has vae and text_encoders)."""
    for name in (TRANSFORMERS, SWITTI, VAR, SUBJECTS):
        path = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, path)
        else:
            folder_paths.folder_names_and_paths[name] = ([path], set(WEIGHT_EXTENSIONS))


EMBEDDED = "embedded toy model (128², no download)"  # the loaders' choice that reads var_core/bundle
EMBEDDED_SUBJECT = "embedded: "  # + a bundled example subject's name (Load Subject)


def model_choices(folder: str) -> list[str]:
    """A loader's options: the embedded toy model first (when it ships), then the files in models/<folder>."""
    return ([EMBEDDED] if embedded.available() else []) + (list_folder_models(folder) if folder in FOLDER_MARKERS
                                                           else list_files(folder))


def model_path(folder: str, name: str) -> str:
    """The file (or T5 folder) a loader choice names."""
    if name == EMBEDDED:
        part = {TRANSFORMERS: "transformer", "vae": "vae", "text_encoders": "text_encoder"}[folder]
        return str(embedded.bundle_paths()[part])
    return folder_model_path(folder, name) if folder in FOLDER_MARKERS else full_path(folder, name)


def subject_choices() -> list[str]:
    """Load Subject's options: the bundled example subjects trained on the embedded model, then models/var_subjects."""
    bundled = [EMBEDDED_SUBJECT + n for n, s in embedded.example_subjects().items() if s["subject"]] \
        if embedded.available() else []
    return bundled + [f for f in list_files(SUBJECTS) if f.lower().endswith(SUBJECT_EXTENSION)]


def subject_path(name: str) -> str:
    if name.startswith(EMBEDDED_SUBJECT):
        key = name[len(EMBEDDED_SUBJECT):]
        subject = embedded.example_subjects().get(key, {}).get("subject")
        if subject is None:
            raise FileNotFoundError(f"The embedded model has no trained example subject {key!r}.")
        return str(subject)
    return full_path(SUBJECTS, name)


def list_files(folder: str) -> list[str]:
    """Weight files in models/<folder>; empty ones are names reserved by a save in progress (free_name)."""
    return [f for f in folder_paths.get_filename_list(folder) if os.path.splitext(f)[1].lower() in WEIGHT_EXTENSIONS
            and os.path.getsize(folder_paths.get_full_path(folder, f)) > 0]


def full_path(folder: str, name: str) -> str:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"'{name}' was not found in the models/{folder} folders "
                                f"({', '.join(folder_paths.get_folder_paths(folder))}).")
    return path


# A model that is a folder, not a file: a Hugging Face T5 or CLIP folder, Infinity-8B's folder of shards, a Switti
# folder, the VQVAE-Switti folder
FOLDER_MARKERS = {"text_encoders": "config.json", TRANSFORMERS: "model.safetensors.index.json", SWITTI: "config.json",
                  "vae": "config.json"}


def list_folder_models(folder: str, files: bool = True) -> list[str]:
    """models/<folder>'s model folders (those holding FOLDER_MARKERS[folder]) listed once each as 'name/', then (with
    ``files``) the single files that are not inside one."""
    folders = []
    for root in folder_paths.get_folder_paths(folder):
        if os.path.isdir(root):
            for entry in sorted(os.listdir(root)):
                if os.path.isfile(os.path.join(root, entry, FOLDER_MARKERS[folder])):
                    folders.append(entry + "/")
    inside = tuple(folders)
    loose = [f for f in list_files(folder) if not f.replace(os.sep, "/").startswith(inside)] if files else []
    return folders + loose


def folder_model_path(folder: str, name: str) -> str:
    """The path a loader choice names: a model folder ('name/') or a file."""
    if name.endswith("/"):
        for root in folder_paths.get_folder_paths(folder):
            if os.path.isfile(os.path.join(root, name, FOLDER_MARKERS[folder])):
                return os.path.join(root, name.rstrip("/"))
        raise FileNotFoundError(f"No model folder '{name}' (with {FOLDER_MARKERS[folder]}) in models/{folder}.")
    return full_path(folder, name)


def safe_name(text: str, default: str) -> str:
    """A file-name-safe version of user text (letters, digits, '_', '-', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or default


Interrupted = mm.InterruptProcessingException  # what ComfyUI raises on Cancel


def interrupted() -> bool:
    return mm.processing_interrupted()


def raise_if_interrupted() -> None:
    mm.throw_exception_if_processing_interrupted()


def progress_bar(total: int):
    return comfy.utils.ProgressBar(total)


def sampling_progress(total: int):
    """var_core's per-scale progress callback: ComfyUI's progress bar, and Cancel stops the sampler at the next
    scale."""
    bar = progress_bar(total)

    def progress(k: int, n: int) -> None:
        bar.update_absolute(k, n)
        raise_if_interrupted()
    return progress


def output_directory() -> str:
    return folder_paths.get_output_directory()


def subjects_directory() -> str:
    return folder_paths.get_folder_paths(SUBJECTS)[0]


def free_name(folder: str, prefix: str, suffix: str = ".safetensors") -> str:
    """<folder>/<prefix>_00001<suffix>, the first number not taken, reserved at once (an empty file, created
    atomically): two runs at the same time never get the same name, and nothing earlier is ever overwritten. Write
    the file later with overwrite=True; empty (reserved) files are not offered by the loaders."""
    prefix = safe_name(prefix, "subject")
    i = 1
    while not reserve_name(os.path.join(folder, f"{prefix}_{i:05d}{suffix}")):
        i += 1
    return os.path.join(folder, f"{prefix}_{i:05d}{suffix}")


def checkpoints_directory() -> str:
    """output/varbooth_checkpoints: the running trainings' last good states (and their resumable state files)."""
    return os.path.join(output_directory(), "varbooth_checkpoints")


def list_checkpoints() -> list[str]:
    folder = checkpoints_directory()
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and not f.endswith(".state.safetensors")
                  and os.path.getsize(os.path.join(folder, f)) > 0)  # not a name reserved for a running training

