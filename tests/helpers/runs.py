"""Training runs for the tests: the shared test config, run folders as capgen-train leaves
them, and what the tests read back from a run (checkpoints, TensorBoard curves, files).

The shared test config is cheap by default: tiny shapes data (`debug=fast`), no logger, no
caption-sample figures and no Java metrics (METEOR and SPICE each start a JVM). A test that
asserts on one of these asks for it: `rich=True` keeps everything capgen-train does by
default, and an override of one of the keys below (`logger=tensorboard`,
`callbacks.caption_samples.num_samples=2`, `model.module.test.metrics=[...]`) keeps that one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PluginEventAccumulator

from capgen.config import CONF_DIR

SIZES = "data.source.sizes={train:64,val:16,test:16}"
# key -> the override that switches it off; a test's own override of the key (or of a key
# above or below it) replaces it.
CHEAP = {
    "logger": "logger=[]",
    "callbacks.caption_samples.num_samples": "callbacks.caption_samples.num_samples=0",
    "model.module.test.metrics": "model.module.test.metrics=[BLEU,ROUGE-L,CIDEr]",
}


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _touches(given: str, key: str) -> bool:
    return given == key or given.startswith(key + ".") or key.startswith(given + ".")


def cheap(*overrides: str, rich: bool = False) -> list[str]:
    """`overrides` after the cheap settings that none of them touches (none with rich=True)."""
    keys = [_key(o) for o in overrides]
    if rich:
        return list(overrides)
    off = [o for key, o in CHEAP.items() if not any(_touches(k, key) for k in keys)]
    return [*off, *overrides]


def compose_command(name: str, *overrides: str) -> DictConfig:
    """The config of capgen-<name> (train, eval, caption, prepare, demo) as Hydra composes it
    from `overrides`, nothing added."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


def compose_train(out: Path, *overrides: str, rich: bool = False, small_shapes: bool = True, fast: bool = True,
                  hydra_config: bool = False) -> DictConfig:
    """The train config as `capgen-train debug=fast <overrides>` composes it (without debug=fast
    with fast=False), writing into out; on shapes data of the default sizes, `small_shapes`
    adds SIZES (seconds, not minutes)."""
    Path(out).mkdir(parents=True, exist_ok=True)

    def composed(*extra: str) -> DictConfig:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("train", overrides=[*(["debug=fast"] if fast else []), *cheap(*overrides, rich=rich), *extra,
                                               f"paths.output_dir={out}"],
                           return_hydra_config=hydra_config)

    cfg = composed()
    custom = any(_key(o).startswith("data.source.sizes") for o in overrides)
    if small_shapes and not custom and "ShapesSource" in cfg.data.source._target_:
        cfg = composed(SIZES)
    return cfg


def train_run(run: Path, *overrides: str, rich: bool = False) -> Path:
    """A trained run in a folder laid out as capgen-train leaves it (.hydra/config.yaml,
    overrides.yaml and hydra.yaml, checkpoints/, summary.json), so that capgen-eval run=,
    resume= (also of a copy elsewhere) and the demo take it."""
    from capgen.commands.train.fit import train

    cfg = compose_train(run, *overrides, rich=rich, hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    given = [o for o in cfg.hydra.overrides.task if not o.startswith("paths.output_dir=")]
    with open_dict(cfg):
        del cfg.hydra
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(given), run / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}), run / ".hydra" / "hydra.yaml")
    train(cfg)
    return run


def checkpoint(run: Path, name: str = "last.ckpt") -> dict:
    return torch.load(Path(run) / "checkpoints" / name, weights_only=True)


def tb_run(run: Path) -> Path:
    """The run's one TensorBoard run folder (<run>/tb/<name>): a resume must not start a second."""
    folders = [p for p in (Path(run) / "tb").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def _written(event_file: Path) -> tuple[int, int, int]:
    """When an event file was started: events.out.tfevents.<seconds>.<host>.<pid>.<counter>."""
    parts = event_file.name.split(".")
    return int(parts[3]), int(parts[-2]), int(parts[-1])


@contextmanager
def _written_order(run: Path) -> Iterator[str]:
    """A temporary folder with the event files of a run's TensorBoard folder named in the order
    they were written, as TensorBoard reads those of a run resumed by a new process. (By name,
    TensorBoard's order, two files that one test process started in the same second sort by
    their writer counter as text: ".10" before ".9".)"""
    files = sorted(tb_run(run).glob("events.out.tfevents.*"), key=_written)
    with tempfile.TemporaryDirectory() as folder:
        for k, path in enumerate(files):
            shutil.copyfile(path, Path(folder) / f"events.out.tfevents.{k:06d}.test")
        yield folder


def tb_events(run: Path) -> EventAccumulator:
    """A run's TensorBoard folder as TensorBoard's Python EventAccumulator reads it, purging what
    a resume drops, every point and image kept (no sampling)."""
    with _written_order(run) as folder:
        return EventAccumulator(folder, size_guidance={"images": 0, "scalars": 0, "tensors": 0}).Reload()


def tb_steps(run: Path) -> dict[str, list[int]]:
    """The steps of every tag of a run's TensorBoard folder as `tensorboard --load_fast=false`
    reads it: its plugin loader, where scalars, images and text are all tensors."""
    with _written_order(run) as folder:
        events = PluginEventAccumulator(folder, size_guidance={"tensors": 0}).Reload()
    return {tag: [e.step for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]}


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of a run's TensorBoard folder (tb_events)."""
    events = tb_events(run)
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same_training_state(a: dict, b: dict) -> None:
    """Two checkpoints hold the same training state, bit for bit: weights, optimizer, schedule."""
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k  # bit-identical, not merely close
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["lr_schedulers"] == b["lr_schedulers"]


def assert_equals_uninterrupted(run: Path, reference: Path, steps: int, note: str) -> None:
    """`run`, interrupted and resumed, ended with the weights and the curves of `reference`, one
    uninterrupted run of the same settings; each of its `steps` training steps logged once."""
    final, expected = checkpoint(run), checkpoint(reference)
    assert final["global_step"] == steps, note
    for key, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), f"{key} differs ({note})"
    logged, expected_logs = scalars(run), scalars(reference)
    assert [s for s, _ in logged["train/loss"]] == list(range(steps)), note  # each step once, none missing
    for tag in ("train/loss", "val/loss", "val/CIDEr", "val/BLEU-4"):
        assert logged[tag] == expected_logs[tag], f"{tag} ({note})"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder, by relative path: equal snapshots mean nothing was written."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_run_folder(path: Path, overrides: list[str], summary: dict | None = None) -> Path:
    """A run folder as capgen-train leaves it, without training: its .hydra/ config and overrides,
    and `summary` (any dict, a malformed one too) as its summary.json."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 42\n")
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def half_written(summary: dict) -> str:
    """The first half of summary.json as written before records were atomic: a write cut off."""
    text = json.dumps(summary, indent=2)
    return text[: len(text) // 2]


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (captions.jsonl, test_captions.jsonl)."""
    return [json.loads(line) for line in path.read_text().splitlines()]
