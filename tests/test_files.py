"""Writing files: atomic, never overwriting unless asked, and race-free when two writers want one name."""
import threading
from pathlib import Path

import pytest
import torch

from var_core.checkpoint import (load_optimizer_tensors, optimizer_tensors, reserve_name, write_atomic)


def test_two_writers_racing_for_one_name_one_wins(tmp_path):
    """Both writers pass the early 'does it exist?' check before either finishes (the barrier holds them inside
    their write); exactly one may take the name, the other must be refused, and the file is the winner's."""
    target = tmp_path / "subject.bin"
    both_writing = threading.Barrier(2)
    results = {}

    def writer(tag: bytes):
        def write(tmp):
            both_writing.wait(timeout=10)
            with open(tmp, "wb") as f:
                f.write(tag)
        try:
            write_atomic(target, write, overwrite=False)
            results[tag] = "written"
        except FileExistsError as e:
            results[tag] = str(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in (b"first", b"second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [tag for tag, r in results.items() if r == "written"]
    assert len(winners) == 1, results
    loser = next(r for r in results.values() if r != "written")
    assert "already exists" in loser and str(target) in loser
    assert target.read_bytes() == winners[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subject.bin"]  # no temporary file left behind


def test_overwrite_replaces_and_reserved_names_are_taken_once(tmp_path):
    target = tmp_path / "a.bin"
    write_atomic(target, lambda tmp: open(tmp, "wb").write(b"1"))
    with pytest.raises(FileExistsError):
        write_atomic(target, lambda tmp: open(tmp, "wb").write(b"2"))
    write_atomic(target, lambda tmp: open(tmp, "wb").write(b"3"), overwrite=True)
    assert target.read_bytes() == b"3"
    name = tmp_path / "sub" / "b.bin"
    assert reserve_name(name) and not reserve_name(name)  # the second caller must pick another name
    assert name.stat().st_size == 0


def test_optimizer_state_round_trip():
    """The one optimizer-state format (pretraining and subject tuning both write it) restores Adam exactly: the next
    step from a restored optimizer equals the next step of the original."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.AdamW(a.parameters(), 1e-2), torch.optim.AdamW(b.parameters(), 1e-2)
    names = [n for n, _ in a.named_parameters()]
    x = torch.randn(8, 4)
    for _ in range(3):
        a(x).square().mean().backward()
        opt_a.step()
        opt_a.zero_grad()
    b.load_state_dict(a.state_dict())
    tensors = optimizer_tensors(opt_a, names)
    assert set(tensors) == {f"adam.{n}.{f}" for n in names for f in ("step", "exp_avg", "exp_avg_sq")}
    load_optimizer_tensors(opt_b, tensors, names)
    for model, opt in ((a, opt_a), (b, opt_b)):
        model(x).square().mean().backward()
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="names for"):
        optimizer_tensors(opt_a, names[:1])


def test_an_atomic_write_syncs_its_folder_after_the_rename(tmp_path, monkeypatch):
    """The renamed file's directory entry reaches the disk too (fsync of the folder), not only its bytes."""
    import os
    import stat
    from var_core.checkpoint import write_atomic
    synced, real = [], os.fsync
    for name, overwrite in (("a.bin", False), ("b.bin", True)):
        def fsync(fd):
            synced.append((stat.S_ISDIR(os.fstat(fd).st_mode), (tmp_path / name).exists()))
            real(fd)
        monkeypatch.setattr(os, "fsync", fsync)
        synced.clear()
        write_atomic(tmp_path / name, lambda p: Path(p).write_bytes(b"x"), overwrite=overwrite)
        assert synced == [(False, False), (True, True)]  # the file's bytes, then the folder holding its name
