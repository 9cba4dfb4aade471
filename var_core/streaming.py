"""Block streaming: a transformer whose blocks live in host memory and visit the compute device one at a time, for
cards that cannot hold the whole model. Everything but the blocks (embeddings, text path, head) moves to the device;
each block's weights are copied there just before it runs (the next block's copy is made on a side stream while this
one computes, from pinned memory) and dropped after it. The arithmetic is the resident model's, on the same device,
so outputs are identical; the cost is one host-to-device copy of the streamed blocks per scale (the first blocks
stay on the device as far as the memory allows: ``resident``).

    streaming = stream_blocks(model, torch.device("cuda"), resident=resident_blocks(model, budget))
    images = var_core.sample(model, vae, text, schedule)
    streaming.close()  # the blocks stay in host memory; model.to(device) makes the model resident again

Works for sampling and for tuning (a block recomputed by gradient checkpointing is copied again; without
checkpointing autograd keeps each block's copy until the backward pass, so streaming then saves nothing).
"""
from __future__ import annotations

import torch


class BlockStreaming:
    """``resident``: how many of the first blocks stay on the device (as many as fit: the fewer blocks streamed, the
    less is copied per scale); the others are streamed."""

    def __init__(self, model, device: torch.device, resident: int = 0, host: torch.device = torch.device("cpu"),
                 pin: bool | None = None):
        self.model, self.device = model, torch.device(device)
        every = list(model.blocks)
        if not 0 <= resident < len(every):
            raise ValueError(f"resident blocks: {resident}; this model has {len(every)}, and at least one is streamed.")
        self.blocks = every[resident:]
        for block in every[:resident]:
            block.to(self.device)
        for block in self.blocks:
            block.to(host)
        inside = {id(m) for block in self.blocks for m in block.modules()}
        for module in model.modules():  # everything but the blocks to the device
            if id(module) not in inside:
                for name, t in list(module._parameters.items()) + list(module._buffers.items()):
                    if t is not None:
                        _move(module, name, t.to(self.device))
        pin = self.device.type == "cuda" and torch.device(host).type == "cpu" if pin is None else pin
        # (module, kind, name, host tensor) of every weight of each block, pinned for asynchronous copies
        self.slots = []
        for block in self.blocks:
            slots = []
            for module in block.modules():
                for kind in ("_parameters", "_buffers"):
                    for name, t in getattr(module, kind).items():
                        if t is not None:
                            if pin and not t.is_pinned():
                                t.data = t.data.pin_memory()
                            slots.append((module, kind, name, t))
            self.slots.append(slots)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.prefetched: dict[int, tuple[list, object]] = {}
        self.copies = 0  # block copies made (tests count them)
        # every call of a block that reads its weights (its forward, AdaLN modulation, ...), fp8's wrappers or none
        self.wrapped = [{c: block.__dict__.get(c) for c in getattr(block, "weight_calls", ("forward",))}
                        for block in self.blocks]
        for i, block in enumerate(self.blocks):
            for call in self.wrapped[i]:
                setattr(block, call, self._streamed(i, getattr(block, call)))

    def _copy(self, i: int):
        """Device copies of block i's weights (on the side stream, with an event marking their end)."""
        self.copies += 1
        if self.stream is None:
            return [t.to(self.device, copy=True) for *_, t in self.slots[i]], None  # (a real copy on the CPU too)
        with torch.cuda.stream(self.stream):
            copies = [t.to(self.device, non_blocking=True) for *_, t in self.slots[i]]
            done = torch.cuda.Event()
            done.record(self.stream)
        return copies, done

    def _streamed(self, i: int, call):
        def run(*args, **kwargs):
            copies, done = self.prefetched.pop(i, None) or self._copy(i)
            if done is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(done)
                for t in copies:
                    t.record_stream(current)  # the side stream's memory is not reused before this block is done
            if self.stream is not None:
                nxt = (i + 1) % len(self.blocks)
                self.prefetched[nxt] = self.prefetched.get(nxt) or self._copy(nxt)
            swapped = []
            for (module, kind, name, host), copy in zip(self.slots[i], copies):
                table = getattr(module, kind)
                now = table[name]
                if now is host:  # (a weight given by the caller, e.g. a subject's merged weight, is its own)
                    table[name] = copy
                elif now is not None and now.device != self.device:
                    table[name] = now.to(self.device)
                else:
                    continue
                swapped.append((table, name, now))
            try:
                return call(*args, **kwargs)
            finally:
                for table, name, now in swapped:
                    table[name] = now
        return run

    def close(self) -> None:
        """Stop streaming: the blocks' own calls back, their weights where they are stored."""
        for block, calls in zip(self.blocks, self.wrapped):
            for call, own in calls.items():
                block.__dict__.pop(call, None)
                if own is not None:
                    setattr(block, call, own)
        self.prefetched.clear()
        self.model._streaming = None

    @property
    def device_bytes(self) -> int:
        """Weights this model holds on the device: everything but the streamed blocks, and two streamed blocks in
        flight (one computing, the next being copied)."""
        streamed = [sum(t.numel() * t.element_size() for *_, t in slots) for slots in self.slots]
        return _bytes(self.model) - sum(streamed) + 2 * max(streamed)


def _move(module, name: str, tensor: torch.Tensor) -> None:
    if name in module._parameters:
        module._parameters[name].data = tensor  # the same Parameter object: optimizers and views keep it
    else:
        module._buffers[name] = tensor


def stream_blocks(model, device, resident: int = 0) -> BlockStreaming:
    """Stream ``model``'s blocks (all but the first ``resident``, which move to ``device``) from host memory to
    ``device`` (stops a streaming already running)."""
    if getattr(model, "_streaming", None) is not None:
        model._streaming.close()
    model._streaming = BlockStreaming(model, device, resident)
    return model._streaming


def resident_blocks(model, budget: int) -> int:
    """How many blocks can stay on the device when the model may hold ``budget`` bytes there: everything but the
    blocks, two streamed blocks in flight (one computing, one being copied), then whole blocks while they fit."""
    blocks = [_bytes(b) for b in model.blocks]
    rest = _bytes(model) - sum(blocks)
    room = budget - rest - 2 * max(blocks)
    n = 0
    while n < len(blocks) - 1 and room >= blocks[n]:
        room -= blocks[n]
        n += 1
    return n


def _bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())
