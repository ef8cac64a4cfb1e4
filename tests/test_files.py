"""Writing files: the umask is respected, and identical weights are identical bytes.

The output-path convention's refusals (missing folders, files in the way, folders of other
files) are rows of the bad-input table in tests/test_bad_input.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct

import pytest
import torch

from robustzoo import files
from robustzoo.runs import read_weights, save_weights


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_to(mask: int) -> None:
        os.umask(mask)

    yield set_to
    os.umask(saved)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_new_files_get_0666_less_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert files._umask() == mask
    files.write_text(tmp_path / "a.txt", "x")
    save_weights(tmp_path / "w.safetensors", {"t": torch.zeros(2)}, {})
    assert _mode(tmp_path / "a.txt") == 0o666 & ~mask
    assert _mode(tmp_path / "w.safetensors") == 0o666 & ~mask


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "eval.json"
    target.write_text("{}")
    os.chmod(target, 0o600)  # the user made it private
    files.write_json(target, {"a": 1})
    assert _mode(target) == 0o600 and json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _header(path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def test_the_safetensors_header_lists_metadata_in_sorted_order(tmp_path):
    meta = {f"key{i}": i for i in range(20)} | {"epsilon": "ε = 8/255"}
    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.int64)}
    digests = set()
    for i in range(4):  # safetensors' own order changes from one save to the next
        save_weights(tmp_path / f"w{i}.safetensors", tensors, meta)
        digests.add(hashlib.sha256((tmp_path / f"w{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    header = _header(tmp_path / "w0.safetensors")
    keys = list(header["__metadata__"])
    assert keys == sorted(keys) and list(header)[0] == "__metadata__"
    back, saved_meta = read_weights(tmp_path / "w0.safetensors")
    assert torch.equal(back["b"], tensors["b"]) and torch.equal(back["a"], tensors["a"])
    assert saved_meta["robustzoo.epsilon"] == "ε = 8/255" and saved_meta["robustzoo.key7"] == "7"


def test_two_identical_seeded_runs_write_identical_weight_files(tmp_path):
    from robustzoo.testing import train_tiny

    # Customized AT: its per-example ε table goes to aux.safetensors, so both files are checked.
    for name in ("a", "b"):
        train_tiny(tmp_path / name, "customized", subset=200, steps=2, eval_n=16)
    for fname in ("model.safetensors", "aux.safetensors", "last.safetensors"):
        a, b = (tmp_path / name / fname for name in ("a", "b"))
        assert a.read_bytes() == b.read_bytes(), f"{fname} differs between two identical runs"
