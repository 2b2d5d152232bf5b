"""Checkpoint writes are all-or-nothing; the format stamp refuses files this capgen cannot read."""

import builtins

import pytest
import torch

import capgen.atomic as ck
from capgen.lightning.checkpoint_io import AtomicCheckpointIO
from capgen.runs.checkpoint import check_format, stamp


def test_a_save_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert io.load_checkpoint(path)["step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_a_write_that_dies_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    before = path.read_bytes()

    class Dies:
        """A file whose write stops after a few bytes, as a killed process's would."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data[:10]))
            raise OSError("disk full")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(ck, "open", lambda p, mode: Dies(builtins.open(p, mode)), raising=False)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == before  # the old checkpoint, byte for byte
    assert not path.with_name("last.ckpt.tmp").exists()  # the torn .tmp is removed
    monkeypatch.delattr(ck, "open")
    io.save_checkpoint({"step": 3}, path)
    assert io.load_checkpoint(path)["step"] == 3 and not path.with_name("last.ckpt.tmp").exists()


def test_format_stamp_is_checked():
    ckpt = {}
    stamp(ckpt)
    check_format(ckpt, "a.ckpt")
    with pytest.raises(ValueError, match=r"ckpt_path=other\.ckpt: the checkpoint has no capgen format stamp"):
        check_format({"state_dict": {}}, "other.ckpt")
    with pytest.raises(ValueError, match=r"ckpt_path=new\.ckpt: this checkpoint was written by capgen 2\.0 in "
                                         r"checkpoint format 3, but this capgen \(.+\) reads format 2"):
        check_format({"capgen": {"format": 3, "version": "2.0"}}, "new.ckpt")
    with pytest.raises(ValueError, match=r"ckpt_path=old\.ckpt: this checkpoint was written by capgen 0\.1 in "
                                         r"checkpoint format 1, an earlier layout .* no longer reads \(it reads format 2\)"):
        check_format({"capgen": {"format": 1, "version": "0.1"}}, "old.ckpt")


def test_a_text_file_given_as_checkpoint_is_named_without_torchs_weights_only_advice(tmp_path):
    from capgen.runs.checkpoint import UnreadableCheckpoint, read_checkpoint

    path = tmp_path / "vocab.json"
    path.write_text('{"itos": ["<pad>"]}')
    with pytest.raises(UnreadableCheckpoint) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"ckpt_path={path}: not a checkpoint torch can read (not a whole zip archive")
    assert "weights_only" not in message and "\n" not in message
