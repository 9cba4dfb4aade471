"""Subject tuning: teach the base model a subject from a few photos; store and apply the result."""
from .data import SubjectImages, image_files, folder_captions, instance_prompt, prepare_images
from .apply import (PromptReadings, SubjectPatch, SubjectView, apply_subjects, blend, encode_prompts, entries_of,
                    read_prompts, subjects_of, with_strength_schedule)
from .delta import SubjectDelta, arbooth_subject
from .fingerprint import check_fits, fingerprint
from .config import TrainConfig
from .losses import ScaleWeights, weighted_loss
from .placeholder import DEFAULT_TOKEN, substitute
from .selection import parse_blocks, parse_groups, select_targets
from .subject import load_subject, save_subject
from .trainer import Progress, SubjectTrainer, train_subject

__all__ = ["DEFAULT_TOKEN", "Progress", "PromptReadings", "ScaleWeights", "SubjectDelta", "SubjectImages",
           "SubjectPatch", "SubjectTrainer", "SubjectView", "TrainConfig", "apply_subjects", "arbooth_subject",
           "blend", "check_fits", "encode_prompts", "entries_of", "fingerprint", "folder_captions", "image_files",
           "instance_prompt", "load_subject", "parse_blocks", "parse_groups", "prepare_images", "read_prompts",
           "save_subject", "select_targets", "subjects_of", "substitute", "train_subject", "weighted_loss",
           "with_strength_schedule"]
