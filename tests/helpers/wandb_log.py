"""Reading a W&B offline run's log (<run>/wandb/offline-run-*/run-<id>.wandb) without a network:
the W&B records it holds, for tests to check what a run logged.

The file is a LevelDB-style log: a 7-byte header (":W&B", a magic number, a version), then
32 KiB blocks of chunks, each a 7-byte chunk header (checksum: 4 bytes, length: 2 bytes little
endian, kind: 1 byte: 1 a whole record, 2 its first part, 3 a middle part, 4 its last part) and
the data; a block's last < 7 bytes are padding. A record is a wandb.proto Record message.

`wandb.finish()` returns before W&B's service has written the whole log: read right after it, in
the process that logged, the file had lost its last rows and its exit record (1 of 15 runs, W&B
0.31; a process that ends waits for the service, so the file is whole once it has exited).
The readers below wait for the exit record, the run's last, before they read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

BLOCK, CHUNK_HEADER = 32768, 7
WHOLE, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, parts = CHUNK_HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # padding up to the next block
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind not in (WHOLE, FIRST, MIDDLE, LAST) or pos + CHUNK_HEADER + length > len(data):
            break  # zeros past the last chunk written, or a chunk the writer had not finished
        parts += data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (WHOLE, LAST):
            yield wandb_internal_pb2.Record.FromString(parts)
            parts = b""


def finished_records(path: Path, timeout: float = 60.0) -> list:
    """The run's records once its exit record has been written (W&B's service writes the log
    after wandb.finish() returns)."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout:.0f} s ({len(found)} records): W&B did not finish the run's log")
        time.sleep(0.1)


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def history(path: Path) -> dict[str, list]:
    """Every logged value by key, in the order logged (wandb.log's rows, as the run's charts read them)."""
    out: dict[str, list] = {}
    for record in finished_records(path):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                out.setdefault(_key(item), []).append(json.loads(item.value_json))
    return out


def config(path: Path) -> dict:
    """The run's config (its logged hyper-parameters), as the last update of each key left it."""
    out: dict = {}
    for record in finished_records(path):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                out[_key(item)] = json.loads(item.value_json)
    return out
