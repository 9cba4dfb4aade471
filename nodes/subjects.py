"""Subject files in models/var_subjects: save (never overwriting), load, apply to a model (chainable); example
subject photos shipped with the embedded model."""
from __future__ import annotations

import os

import torch
from comfy_api.latest import io, ui

from var_core.images import load_image
from var_core import embedded
from var_core.tuning import apply_subjects, load_subject, save_subject

from . import comfy_env, managed
from .types import CATEGORY, Model, Subject, to_image


class SaveSubject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_SaveSubject", display_name="Save Subject", category=f"{CATEGORY}/subjects",
            description="Writes the subject to models/var_subjects/<prefix>_NNNNN.safetensors (never overwrites).",
            inputs=[Subject.Input("subject", tooltip="A trained or loaded subject."),
                    io.String.Input("filename_prefix", default="subject",
                                    tooltip="File name start; a free number is appended.")],
            outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, subject, filename_prefix):
        folder = comfy_env.subjects_directory()
        os.makedirs(folder, exist_ok=True)
        path = save_subject(subject, comfy_env.free_name(folder, filename_prefix), overwrite=True)  # the reserved name
        text = f"saved {path} ({os.path.getsize(path) / 2**20:.1f} MiB)"
        safe = comfy_env.safe_name(filename_prefix, "subject")
        if safe != filename_prefix:
            text += f"\nthe prefix {filename_prefix!r} became {safe!r} (file names keep letters, digits, _ - .)"
        return io.NodeOutput(ui=ui.PreviewText(text))


class LoadSubject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_LoadSubject", display_name="Load Subject", category=f"{CATEGORY}/subjects",
            description="Loads a subject file from models/var_subjects (or an example subject of the embedded model).",
            inputs=[io.Combo.Input("subject_name", options=comfy_env.subject_choices(),
                                   tooltip="File in models/var_subjects (a subject of any family: apply it with "
                                           "its family's Apply Subject); 'embedded: ...' are example subjects "
                                           "trained on the embedded toy model.")],
            outputs=[Subject.Output(display_name="subject", tooltip="The subject (apply it to a model).")])

    @classmethod
    def execute(cls, subject_name):
        return io.NodeOutput(load_subject(comfy_env.subject_path(subject_name)))


def apply_inputs(model: io.Custom, strength: str) -> list:
    """Every family's Apply Subject inputs: its model socket, the subject, the strength (``strength``: what it does on
    this family)."""
    return [model.Input("model", tooltip="A model, possibly with subjects applied already."),
            Subject.Input("subject", tooltip="The subject to add (trained on this model; another family's or "
                                             "another base's is refused)."),
            io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05,
                           tooltip=strength + " Per-scale control: the schedule node.")]


def apply_subject(model, subject, strength) -> io.NodeOutput:
    """A clone of the model's patcher with the subject added: the base is shared, never copied. The subject is moved
    (a copy) to where the weights are only when a node uses the clone (managed.view)."""
    apply_subjects(managed.view(model), [(subject, strength)])  # refuses another family's or another base's now
    clone = model.clone()
    clone.subjects.append((subject, strength))
    return io.NodeOutput(clone)


APPLY = "Returns the model with the subject applied at a strength; chain several for several subjects. The loaded " \
        "base model is shared, never modified."


class ApplySubject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VARBooth_ApplySubject", display_name="Apply Subject", category=f"{CATEGORY}/subjects",
            description=APPLY,
            inputs=apply_inputs(Model, "Scales the weight changes and blends the placeholder between the learned "
                                       "vectors (1) and the class word (0): 0 = the base model drawing the prompt "
                                       "with the class word, exactly. Above 1 only the weights grow."),
            outputs=[Model.Output(display_name="model", tooltip="The model with this subject added.")])

    @classmethod
    def execute(cls, model, subject, strength):
        return apply_subject(model, subject, strength)


class ExampleSubject(io.ComfyNode):
    """Photos of a subject the embedded model never saw, shipped with the pack: the training templates run with nothing
    in input/."""

    @classmethod
    def define_schema(cls):
        names = list(embedded.example_subjects()) if embedded.available() else []
        return io.Schema(
            node_id="VARBooth_ExampleSubject", display_name="Example Subject Photos", category=f"{CATEGORY}/subjects",
            description="Rendered photos of a subject held out from the embedded toy model's training, with its "
                        "class word: something to train on before you bring your own photos.",
            inputs=[io.Combo.Input("subject", options=names, default=names[0] if names else None,
                                   tooltip="A bundled example subject (a glyph the embedded model never saw).")],
            outputs=[io.Image.Output(display_name="images", tooltip="Its photos as a batch (128²)."),
                     io.String.Output(display_name="class_word", tooltip="Its class, e.g. dog.")])

    @classmethod
    def execute(cls, subject):
        subjects = embedded.example_subjects()
        if subject not in subjects:
            raise ValueError(f"No bundled example subject {subject!r}; there are: {', '.join(subjects)}.")
        info = subjects[subject]
        photos = torch.cat([load_image(p) for p in info["photos"]])
        return io.NodeOutput(to_image(photos), info["class_word"],
                             ui=ui.PreviewText(f"{subject}: {len(info['photos'])} photos of a {info['class_word']}"))


NODES = [SaveSubject, LoadSubject, ApplySubject, ExampleSubject]
