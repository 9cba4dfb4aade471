"""When the codebook families' subject tuning recomputes blocks in the backward pass (gradient checkpointing)."""
from __future__ import annotations

from ..tuning.trainer import STREAMED


class CheckpointOnGPU:
    """A SubjectTrainer mixin: as asked, else on on a GPU (LoRA on Switti-1024 at 512² needs it to fit 24 GiB:
    docs/benchmarks.md, memory_switti.py) and off on the CPU, which trains small models."""

    def _checkpointing(self, batch: int) -> tuple[bool, str]:
        if self.config.gradient_checkpointing is not None:
            on = self.config.gradient_checkpointing
            return on, "on (asked for)" if on else "off (asked for)"
        if getattr(self.model, "_streaming", None) is not None:
            return STREAMED
        on = self.device.type == "cuda"
        return on, "on (on a GPU)" if on else "off (on the CPU)"
