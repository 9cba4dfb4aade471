"""Data-parallel subject tuning over the processes of a ``torchrun`` launch (torch.distributed).

Every process (rank) holds the whole subject delta and draws the randomness of the whole global batch (data order,
flips, Bitwise Self-Correction, teacher samples) from the same seeded streams, then trains on its own rows of that
batch. Its loss is weighted by its share of the rows, and the gradients are summed over the ranks with one
``all_reduce``: every rank then takes the same optimizer step, and the result is the single-process run's with the same
global batch, up to float rounding. Only rank 0 writes files.

With ``shard_base`` (``train --fsdp``) the frozen base is also split over the ranks (FSDP, torch.distributed.fsdp's
``fully_shard``): each rank keeps 1/N of every block's weights, a block's whole weights exist only while it runs, so a
base whose one copy overflows a GPU (Infinity-8B on 24-40 GB) can still be tuned. The subject's own tensors stay
whole on every rank and are summed as above.
"""
from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from .fingerprint import identities


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes training one subject; ``Ranks()`` is a single process."""
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # where collectives' tensors live (NCCL: this rank's GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` (contiguous; sizes differ by at most one)."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def share(self, n: int) -> float:
        """The fraction of a global batch of ``n`` rows that this rank trains on: the weight of its loss."""
        r = self.rows(n)
        return (r.stop - r.start) / n

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (a copy)."""
        values = values.detach().clone()
        if self.world_size > 1:
            dist.all_reduce(values)
        return values

    def sum_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Replace every gradient of ``params`` by its sum over the ranks (one all_reduce of all of them together).

        A parameter without a gradient keeps none (the optimizer skips it, as in one process); which ones have one is
        decided by the computation's structure, the same on every rank."""
        if self.world_size == 1:
            return
        params = [p for p in params if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.view_as(p)

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Give every rank rank 0's values of ``tensors`` (in place)."""
        if self.world_size > 1:
            with torch.no_grad():
                for t in tensors:
                    dist.broadcast(t, 0)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any (e.g. a stop request seen by one rank only)."""
        if self.world_size == 1:
            return flag
        return bool(self.sum(torch.tensor([float(flag)], device=self.device)).item() > 0)

    def agree(self, inputs: dict) -> None:
        """Refuse, on every rank at once, to go on unless every rank has the same ``inputs`` (name -> a value
        that pickles: settings, a hash of the photos, ...): the message names the first rank and setting that
        differ from rank 0's. Data parallel training on other photos or settings would mix them silently, and a
        rank with other step counts would wait for the others until the collective timeout."""
        if self.world_size == 1:
            return
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, inputs)
        for rank, theirs in enumerate(everyone[1:], start=1):
            for name in sorted(set(inputs) | set(theirs)):
                a, b = everyone[0].get(name), theirs.get(name)
                if a == b:
                    continue
                if isinstance(a, dict) and isinstance(b, dict):  # name the setting inside, e.g. settings.steps
                    key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                    name, a, b = f"{name}.{key}", a.get(key), b.get(key)
                raise ValueError(f"The {self.world_size} processes do not agree, so none of them trains: rank {rank} "
                                 f"has {name} = {_shown(b)}, rank 0 has {_shown(a)}. Start every process with the "
                                 f"same photos, captions, settings and output.")

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def launched() -> bool:
    """True inside a process started by torchrun (torch.distributed.run), which sets these variables."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def restarted() -> bool:
    """True when torchrun (``--max-restarts``) restarted this launch's processes after one of them failed."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def local_device(requested: str | None) -> torch.device:
    """The device a process uses: ``requested``, else this node's GPU for its local rank, else the CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


SILENCE = 60.0  # seconds without a sign of life after which a rank is reported (train --rank-timeout)


def start(device: torch.device, timeout_minutes: float = 30, silence: float | None = SILENCE) -> Ranks:
    """Join the process group of a torchrun launch (NCCL on GPUs, gloo on CPUs); a single process without one.

    ``timeout_minutes``: how long a collective may wait for the slowest rank before failing (a slow rank is not a
    lost one: loading an 8B base or writing a checkpoint can keep the others waiting for minutes).
    ``silence``: seconds after which a rank that gave no sign of life (its process died, froze or lost its node)
    stops the whole run with a message naming it (``Watch``); None: no watch.
    """
    if not launched():
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), device)
    if silence is not None and ranks.world_size > 1:
        Watch.start_for(ranks, silence)
    return ranks


class Watch(threading.Thread):
    """Heartbeats through the launch's key-value store, beside the main thread (which may be blocked in a
    collective, where nothing else could notice a missing rank before the collective timeout).

    Every rank adds to its own counter every few seconds; rank 0 watches every other rank's counter, the others
    watch rank 0's. A counter that has not moved for ``silence`` seconds means that process died or stopped: the
    watcher prints which rank and ends its own process, and torchrun then ends the rest of the launch (on the
    other nodes, their watchers see rank 0 fall silent). The last regular checkpoint keeps the training."""
    current: "Watch | None" = None

    def __init__(self, store, ranks: Ranks, silence: float):
        super().__init__(name="rank-watch", daemon=True)
        self.store, self.ranks, self.silence = store, ranks, silence
        self.interval = min(5.0, silence / 4)
        self.stopping = threading.Event()

    @classmethod
    def start_for(cls, ranks: Ranks, silence: float) -> None:
        try:
            store = dist.PrefixStore("varbooth-watch/", dist.distributed_c10d._get_default_store())
        except (AttributeError, RuntimeError) as e:  # (a torch without the default store's accessor)
            print(f"rank {ranks.rank}: no watch over the other ranks ({e}); a lost rank is reported by the "
                  f"collective timeout", file=sys.stderr)
            return
        cls.current = cls(store, ranks, silence)
        cls.current.start()

    def run(self) -> None:
        mine = f"beat{self.ranks.rank}"
        watched = range(1, self.ranks.world_size) if self.ranks.is_main else [0]
        seen = {r: (-1, time.monotonic()) for r in watched}
        while not self.stopping.wait(self.interval):
            try:
                self.store.add(mine, 1)
                for r in watched:
                    count = self.store.add(f"beat{r}", 0)  # (adding 0 reads the counter)
                    if count != seen[r][0]:
                        seen[r] = (count, time.monotonic())
                    elif time.monotonic() - seen[r][1] > self.silence and not self.stopping.is_set():
                        self._lost(f"rank {r} has given no sign of life for {self.silence:g} s: its process died, "
                                   f"hangs or lost its node")
            except Exception as e:  # noqa: BLE001 - the store is gone with the launch's host
                if not self.stopping.is_set():
                    self._lost(f"the launch's store stopped answering ({type(e).__name__}: {e})")

    def _lost(self, why: str) -> None:
        print(f"rank {self.ranks.rank}: {why}. Stopping this run (raise train --rank-timeout if a process can "
              f"legitimately freeze that long); the last checkpoint keeps the training: start the run again to "
              f"resume it.", file=sys.stderr, flush=True)
        os._exit(1)  # the main thread may be blocked in a collective: nothing else can end it

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def stop(together: bool = False) -> None:
    """Leave the process group (if this process joined one). ``together`` (after a run that ended normally): wait
    for every rank first, so that none tears down its connections while another still uses them (gloo aborts)."""
    if dist.is_initialized():
        if together:
            dist.barrier()
        if Watch.current is not None:  # after the barrier: a rank that ends early must not look lost
            Watch.current.stop()
            Watch.current = None
        dist.destroy_process_group()


def shard_base(model, ranks: Ranks) -> None:
    """Shard ``model``'s transformer blocks over the ranks (FSDP2, ``fully_shard`` per block), in place, and move the
    rest of it (text path, head: small) to this rank's device. Load the model on the CPU first: only the shards reach
    the GPU. Only low-rank subjects (LoRA) and placeholders can be trained on a sharded base: a full delta would need
    each whole weight (refused by SubjectTrainer)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard  # (distributed builds only)

    if ranks.world_size == 1:
        model.to(ranks.device)
        return
    # the fingerprint reads a few weights, which are split over the ranks from here on: taken now, while whole
    model.sharded_fingerprint = identities(model)
    mesh = init_device_mesh(ranks.device.type, (ranks.world_size,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)  # gathered before the block runs, split again after (also in the backward)
    model.to(ranks.device)


def block_weights_held(model) -> tuple[int, int]:
    """(numbers of the blocks' weights this rank holds, numbers in all blocks): half each for 2 sharded ranks."""
    from torch.distributed.tensor import DTensor
    params = [p for b in model.blocks for p in b.parameters()]
    return (sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params),
            sum(p.numel() for p in params))


def _shown(value, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."
