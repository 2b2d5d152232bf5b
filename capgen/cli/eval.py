"""capgen-eval: score a checkpoint on a split with the data settings of the run that made it.

    capgen-eval run=outputs/train/<run> [split=test] [beam_size=3]     # the run's best checkpoint
    capgen-eval ckpt_path=outputs/train/<run>/checkpoints/last.ckpt  # or any checkpoint
    capgen-eval ckpt_path=... data.source.sizes.test=100      # the run's data, one setting changed
    capgen-eval ckpt_path=... data=coco2014 data.root=/mnt/coco   # other data altogether

`run=<run folder>` evaluates the run's best checkpoint by val/CIDEr (named in its
summary.json); the model, its vocabulary and its decoding settings (the beam size it was
tested with, unless beam_size= is given) come from the checkpoint. The data config comes from the run:
a checkpoint in <run>/checkpoints/ has the run's saved config in <run>/.hydra/config.yaml,
and its `data` node is used as it was trained, with the user's data.* overrides on top. A
`data=<name>` naming another data config replaces it. Without a saved run config the data
config is composed from conf/eval.yaml (and a warning says so).

Writes into the eval's run dir (outputs/eval/<time>): metrics.json, captions.jsonl (one
{image_id, caption, references, logprob} per image), results.json (the COCO caption
server's [{image_id, caption}]) and data.yaml (the data config the scores are for).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from .. import metrics as capgen_metrics
from ..grounding import caption_words, grounding_score, scene_index
from ..metrics import score_captions
from ..module import CaptioningModule
from ..run_dir import best_checkpoint, is_run
from .argv import quote_paths
from .train import CONF_DIR

log = logging.getLogger(__name__)
PATH_KEYS = ("run", "ckpt_path")  # quoted for Hydra, see capgen.cli.argv


# ----- the checkpoint and the run it belongs to --------------------------------------------
def load_checkpoint(path: str, device: str = "cpu") -> CaptioningModule:
    """The module in eval mode on `device`; errors name the file and what is wrong with it."""
    if not path:
        raise ValueError("ckpt_path is not set: give ckpt_path=<run dir>/checkpoints/<name>.ckpt")
    p = Path(path)
    if not p.is_file():
        where = "is a directory; give a .ckpt file in it" if p.is_dir() else "no such file"
        raise FileNotFoundError(f"ckpt_path={path}: {where}")
    try:
        module = CaptioningModule.from_checkpoint(str(p), map_location="cpu")
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "state_dict" in str(e):  # read fine, but the weights do not fit
            detail = " ".join(str(e).split())  # torch lists each mismatch on its own line
            raise ValueError(f"ckpt_path={path}: its weights do not fit the network its net_config builds ({detail})") from None
        raise ValueError(f"ckpt_path={path}: not a checkpoint torch can read ({type(e).__name__}: {e})") from None
    except (AttributeError, TypeError) as e:  # e.g. a plain tensor or state_dict saved with torch.save
        raise ValueError(f"ckpt_path={path}: not a capgen checkpoint ({type(e).__name__}: {e})") from None
    return module.to(device).eval()


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device}: no CUDA device is available here; use device=cpu")
    return device


def run_dir(ckpt_path: str) -> Path | None:
    """The training run a checkpoint belongs to: its grandparent, when that holds the
    run's saved config (<run>/.hydra/config.yaml, the checkpoint in <run>/checkpoints/).
    Where the checkpoint is given wins; a symlink's target's run is the fallback."""
    for path in (Path(ckpt_path).absolute(), Path(ckpt_path).resolve()):
        run = path.parent.parent
        if (run / ".hydra" / "config.yaml").is_file():
            return run
    return None


def run_config(ckpt_path: str) -> DictConfig | None:
    run = run_dir(ckpt_path)
    return OmegaConf.load(run / ".hydra" / "config.yaml") if run else None


def run_data_choice(ckpt_path: str) -> str | None:
    """The data config the run was composed with (`data=<name>`), from its .hydra/hydra.yaml;
    `ckpt_path` is one of the run's checkpoints or the run folder itself."""
    run = Path(ckpt_path) if is_run(Path(ckpt_path)) else run_dir(ckpt_path)
    hydra_yaml = run / ".hydra" / "hydra.yaml" if run else None
    if hydra_yaml is None or not hydra_yaml.is_file():
        return None
    return OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.choices.data", default=None)


def with_run_data_choice(args: list[str]) -> list[str]:
    """Command-line overrides with `data=<the run's data config>` added when none is given.

    Hydra checks data.* overrides against the data config it composes; without this, a
    setting that only the run's data config has (data.root=... for a COCO run) would be
    refused as unknown before the run's config is even read.
    """
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException:
        return args  # Hydra reports the bad override itself
    given = {o.key_or_group: o for o in parsed}
    ckpt = given.get("ckpt_path") or given.get("run")
    if "data" in given or ckpt is None or ckpt.is_sweep_override() or not isinstance(ckpt.value(), str):
        return args
    choice = run_data_choice(ckpt.value())
    if choice is None or not (Path(CONF_DIR) / "data" / f"{choice}.yaml").is_file():
        return args
    return [*args, f"data={choice}"]


def apply_data_overrides(data: DictConfig, overrides: list[str]) -> DictConfig:
    """Apply the data.* command-line overrides to `data` (a data config node) as Hydra would:
    `key=v` sets an existing key (a dict value merges in), `+key=v` adds one, `++key=v` sets
    or adds, `~key` deletes. Unknown keys fail with the override named."""
    root = OmegaConf.create({"data": data})
    OmegaConf.set_struct(root, True)  # so a key the run's data config lacks is an error
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.key_or_group.startswith("data."):
            continue
        key = o.key_or_group
        try:
            if o.is_delete():
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(root, parent)
                if node is None or leaf not in node:
                    raise KeyError(leaf)
                with open_dict(node):
                    del node[leaf]
            elif o.is_add() or o.is_force_add():
                if o.is_add() and OmegaConf.select(root, key, default=None) is not None:
                    raise ValueError(f"{key} already exists; use {key}=... to change it")
                OmegaConf.update(root, key, o.value(), merge=True, force_add=True)
            else:
                OmegaConf.update(root, key, o.value(), merge=True)
        except (KeyError, AttributeError, ValueError) as e:
            raise ValueError(
                f"could not apply {o.input_line} to the run's saved data config ({e}); its keys are "
                f"{sorted(data.keys())}; use +{key}=... to add a key"
            ) from None
    OmegaConf.set_struct(root, False)
    return root.data


def eval_data_config(cfg: DictConfig, overrides: list[str], run_cfg: DictConfig | None, run_choice: str | None) -> DictConfig:
    """The data config to evaluate on (see the module docstring)."""
    data_override = next(
        (o for o in OverridesParser.create().parse_overrides(overrides) if o.key_or_group == "data"), None
    )
    # `data=<name>` replaces the run's data unless it names the very config the run used
    # (which is also what with_run_data_choice adds when none is given).
    replaced = data_override is not None and data_override.value() != run_choice
    if run_cfg is None or "data" not in run_cfg or replaced:
        if run_cfg is None:
            log.warning("no saved run config beside the checkpoint (<run>/.hydra/config.yaml): using data=%s "
                        "as composed from conf/eval.yaml and the command line",
                        data_override.value() if data_override else "shapes")
        return cfg.data
    # Resolved inside the run's config, so ${seed} and the like take the run's values.
    data = OmegaConf.create(OmegaConf.to_container(run_cfg.data, resolve=True))
    return apply_data_overrides(data, overrides)


# ----- evaluation ----------------------------------------------------------------------------
def _scores(predictions: dict[int, str], references: dict[int, list[str]], metrics) -> dict[str, float]:
    """score_captions with the metrics asked for; None: every one that can run here."""
    if "metrics" not in inspect.signature(score_captions).parameters:  # a capgen with BLEU + CIDEr only
        if metrics and not set(metrics) <= {"BLEU", "CIDEr"}:
            raise ValueError(f"metrics={list(metrics)}: this version of capgen.metrics scores BLEU and CIDEr only")
        return score_captions(predictions, references)
    if not metrics:
        metrics = list(getattr(capgen_metrics, "METRICS", ("BLEU", "CIDEr")))
        if not shutil.which("java"):  # METEOR and SPICE are Java programs
            log.warning("no java on PATH: METEOR and SPICE are left out")
            metrics = [m for m in metrics if m not in ("METEOR", "SPICE")]
    return score_captions(predictions, references, metrics=list(metrics))


def checkpoint_to_evaluate(cfg: DictConfig) -> str:
    """cfg.ckpt_path, or the best checkpoint of the run folder cfg.run."""
    if cfg.run and cfg.ckpt_path:
        raise ValueError(f"run={cfg.run} and ckpt_path={cfg.ckpt_path}: give one of them")
    if cfg.run:
        return str(best_checkpoint(Path(cfg.run)))
    if not cfg.ckpt_path:
        raise ValueError("give run=<run folder> (its best checkpoint) or ckpt_path=<checkpoint file>")
    return cfg.ckpt_path


def evaluate(cfg: DictConfig, overrides: list[str]) -> dict:
    """Score cfg.ckpt_path (or the best checkpoint of cfg.run) on cfg.split; `overrides` are
    the command line's (for data.*). Writes the files named in the module docstring into
    cfg.paths.output_dir; returns metrics."""
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split={cfg.split}: evaluate on val or test")
    device = resolve_device(cfg.device)
    ckpt_path = checkpoint_to_evaluate(cfg)
    module = load_checkpoint(ckpt_path, device)
    beam_size = module.hparams.test_beam_size if cfg.beam_size is None else cfg.beam_size
    run_cfg = run_config(ckpt_path)
    data_cfg = eval_data_config(cfg, overrides, run_cfg, run_data_choice(ckpt_path) if run_cfg else None)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(data_cfg, out / "data.yaml")

    extra = {}
    if data_cfg.get("use_features"):  # the feature cache must be the checkpoint's encoder's
        extra["encoder"] = module.hparams.net_config["encoder"]
    datamodule = hydra.utils.instantiate(data_cfg, vocab=module.vocab, **extra)
    loader = datamodule.val_dataloader() if cfg.split == "val" else datamodule.test_dataloader()
    references = datamodule.references(cfg.split)
    found = scene_index(datamodule, cfg.split) if module.net.has_attention else None
    scenes, index = found or (None, {})  # the split's scenes, for the grounding score
    log.info("evaluating %s on %s (%d images), beam_size=%d, on %s",
             ckpt_path, cfg.split, len(references), beam_size, device)

    vocab = module.vocab
    rows: dict[int, dict] = {}  # image id -> captions.jsonl row; an image seen twice counts once
    grounded = ([], [], [])  # alphas (L, P), words (L), scene per caption, for grounding_score
    for batch in loader:
        result = module.generate(batch.images.to(device), beam_size=beam_size)
        for k, image_id in enumerate(batch.image_ids.tolist()):
            if image_id in rows:
                continue
            tokens = result.tokens[k].tolist()
            rows[image_id] = {
                "image_id": image_id,
                "caption": vocab.decode(tokens),
                "references": references[image_id],
                "logprob": float(result.logprob[k]),
            }
            if result.alphas is not None and image_id in index:
                words = caption_words(tokens, vocab.itos, vocab.end_id)
                grounded[0].append(result.alphas[k, : len(words)].cpu())
                grounded[1].append(words)
                grounded[2].append(scenes.scene(index[image_id]))

    predictions = {i: r["caption"] for i, r in rows.items()}
    metrics = _scores(predictions, references, cfg.metrics)
    if grounded[0]:
        g = grounding_score(*grounded, grid=module.net.grid, image_size=scenes.image_size)
        # JSON has no NaN: null when no generated word named an object of its scene.
        metrics["grounding"] = None if math.isnan(g.score) else g.score
        metrics["grounding_chance"] = None if math.isnan(g.chance) else g.chance
        metrics["grounding_other"] = None if math.isnan(g.other) else g.other
        metrics["grounding_words"] = g.n_words

    report = {"checkpoint": str(ckpt_path), "split": cfg.split, "beam_size": beam_size,
              "images": len(rows), **metrics}
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(out / "captions.jsonl", "w") as f:
        for r in rows.values():
            f.write(json.dumps(r) + "\n")
    results = [{"image_id": int(r["image_id"]), "caption": r["caption"]} for r in rows.values()]
    (out / "results.json").write_text(json.dumps(results))
    print(metrics_table(report))
    print(f"wrote metrics.json, captions.jsonl, results.json to {out}")
    return report


def metrics_table(report: dict) -> str:
    lines = [f"{report['checkpoint']} on {report['split']} ({report['images']} images, beam {report['beam_size']})"]
    width = max(len(k) for k in report)
    for key, value in report.items():
        if key in ("checkpoint", "split", "images", "beam_size", "grounding_words"):
            continue
        shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        if key == "grounding" and "grounding_words" in report:
            shown += f"  ({report['grounding_words']} shape words)"
        lines.append(f"  {key:<{width}}  {shown}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def _main(cfg: DictConfig) -> float | None:
    report = evaluate(cfg, list(HydraConfig.get().overrides.task))
    return report.get("CIDEr")


def main() -> None:
    sys.argv[1:] = with_run_data_choice(quote_paths(sys.argv[1:], PATH_KEYS))
    _main()


if __name__ == "__main__":
    main()
