"""Proxy-Tuning's data: prompts that make a model which already knows the subject (e.g. SDXL or Flux with the user's
DreamBooth LoRA) draw it in many contexts, and the matching captions with the placeholder token, so the AR model is
tuned on those generated images ("Proxy-Tuning", tuning on a teacher's subject images)."""
from __future__ import annotations

from typing import Sequence

CONTEXTS = ("on the beach", "in the snow", "in a garden", "at night", "on a red background", "in a city street",
            "on a wooden table", "in the forest", "on a blue background", "in a living room")


def proxy_prompts(subject_phrase: str, class_word: str, token: str, count: int = 8,
                  contexts: Sequence[str] = CONTEXTS, template: str = "a photo of {subject} {context}"):
    """(prompts for the supervising model, captions for training): ``count`` contexts (cycled), the supervisor's
    prompt naming the subject its own way (``subject_phrase``, e.g. "sks dog"), the caption with ``token class``."""
    contexts = [c.strip() for c in contexts if c.strip()]
    if not subject_phrase.strip() or not class_word.strip() or not token.strip():
        raise ValueError("Proxy prompts need the supervisor's subject phrase (e.g. 'sks dog'), the class word and the "
                         "placeholder token.")
    if count < 1 or not contexts:
        raise ValueError("Give at least one context and a count of at least 1.")
    chosen = [contexts[i % len(contexts)] for i in range(count)]
    prompts = [template.format(subject=subject_phrase.strip(), context=c) for c in chosen]
    captions = [template.format(subject=f"{token.strip()} {class_word.strip()}", context=c) for c in chosen]
    return prompts, captions
