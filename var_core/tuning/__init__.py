"""Subject tuning: teach the base model a subject from a few photos; store and apply the result."""
from .data import SubjectImages, image_files, folder_captions, instance_prompt, prepare_images
from .delta import SubjectDelta, SubjectPatch, apply_subjects, arbooth_subject, subjects_of
from .losses import ScaleWeights, distillation_loss, weighted_bitwise_loss
from .placeholder import DEFAULT_TOKEN, encode_prompts, substitute
from .selection import GROUPS, parse_blocks, parse_groups, select_targets
from .subject import fingerprint, load_subject, save_subject
from .trainer import Progress, SubjectTrainer, TrainConfig, model_defaults, train_subject

__all__ = ["DEFAULT_TOKEN", "GROUPS", "Progress", "ScaleWeights", "SubjectDelta", "SubjectImages", "SubjectPatch",
           "SubjectTrainer", "TrainConfig", "apply_subjects", "arbooth_subject", "distillation_loss", "encode_prompts",
           "fingerprint", "folder_captions", "image_files", "instance_prompt", "load_subject", "model_defaults",
           "parse_blocks",
           "parse_groups", "prepare_images", "save_subject", "select_targets", "subjects_of", "substitute",
           "train_subject", "weighted_bitwise_loss"]
