"""Evaluating a checkpoint on a split (capgen-eval), through the same Lightning test step as
capgen-train's test: one evaluation loop, one rule for which scores run.

The data config comes from the run that made the checkpoint: a checkpoint in
<run>/checkpoints/ has the run's saved config in <run>/.hydra/config.yaml, and its `data`
node is used as it was trained, with the user's data.* overrides on top; a checkpoint
without its run folder records the data config it trained with; a `data=<name>` naming
another data config replaces it; split settings that differ from the ones the checkpoint
records are refused (capgen.commands.eval.data).

Ensembles: `ckpt_path=[a.ckpt,b.ckpt]` (or `run=[<run>,<run>]`, each run's best checkpoint)
evaluates the checkpoints as one model, the normalised geometric mean of their word
distributions at every step (capgen.models.ensemble; loading and what is refused:
capgen.lightning.inference). The data config and the test decode are the first checkpoint's
run's; a data config that reads cached features (data.use_features) reads images instead,
since each member runs its own encoder. One checkpoint is scored on cached features only if
they were made by its encoder's config and weights (capgen.commands.eval.features).
metrics.json's `checkpoint` is the list of the members' paths in the order given (one
checkpoint, also `[a.ckpt]`: its path, a string).

Decoding: the run's test decode with the `decode.*` overrides on top, or a preset
(`decode=beam`, ...; capgen.config.decode_group). With n_best > 1 each image's first caption is
scored and all of them are written.

Writes into cfg.paths.output_dir, each file atomically: metrics.json (with the decode
settings used), captions.jsonl (one {image_id, caption, references, logprob, BLEU-4, CIDEr}
per image, and `cut: true` for a caption cut at the length cap: its own BLEU-4 and CIDEr-D as pycocoevalcap scores each image; plus {captions,
logprobs}: the image's n_best captions, when n_best > 1), results.json (the COCO caption
server's [{image_id, caption}]) and data.yaml (the data config the scores are for).

metrics.json also holds statistics of the captions (capgen.metrics.caption_stats):
vocabulary, mean_length, unique_percent and novel_percent (against the training split's
references; null, with novel_note saying why, when the training split cannot be read), and
cut_captions: how many captions were cut at the length cap (the decoder had not ended them). With
several captions per image (n_best > 1) Div-1, Div-2, mBLEU-4 and self-CIDEr
(capgen.metrics.diversity) are added, per image in captions.jsonl and averaged in metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ...atomic import write_atomically
from ...config.checks import check_numbers
from ...config.decode_group import command_settings
from ...config.prepare_args import prepare_args
from ...lightning.callbacks import FollowFreeCores
from ...lightning.hardware import encoder_settings
from ...lightning.inference import checkpoint_list, load_checkpoints, resolve_device
from ...metrics.captions import default_metrics
from ...models.search import DecodeSettings
from ...runs.folders import (
    best_checkpoint,
    check_working_directory,
    run_config,
    run_data_choice,
    run_of_checkpoint,
    run_overrides,
)
from ...runs.records import UnreadableRecord
from ..failure import one_paragraph_on_failure
from .data import eval_data_config
from .features import checkpoint_encoder_weights
from .statistics import corpus_statistics, diversity

log = logging.getLogger(__name__)

# A captions.jsonl row's fields, in this order, those a row has (diversity only with several captions).
CAPTION_KEYS = ("image_id", "caption", "cut", "references", "logprob", "BLEU-4", "CIDEr", "captions", "logprobs", "Div-1",
                "Div-2", "mBLEU-4", "self-CIDEr")


def eval_prepare_args(overrides: list[str], ckpt_path: str | None) -> list[str] | None:
    """The capgen-prepare arguments for the data evaluated on (capgen.config.prepare_args): the
    run's data config with its data settings and those given now, or the data config given now
    (`data=<name>` naming another config than the run's, or a checkpoint without a saved run)."""
    choice = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
    run = run_of_checkpoint(ckpt_path) if ckpt_path else None
    try:
        own = run_overrides(run) if run is not None and choice == run_data_choice(ckpt_path) else []
    except UnreadableRecord:  # the run's settings then are not known: the data config's name and those given now
        own = []
    return prepare_args(choice, [*own, *overrides])


def checkpoints_to_evaluate(cfg: DictConfig) -> list[str]:
    """The checkpoints to evaluate, in order: cfg.ckpt_path (one, or a list: an ensemble), or
    the best checkpoint of the run folder cfg.run (of each, for a list of run folders)."""
    if cfg.run and cfg.ckpt_path:
        raise ValueError(f"run={cfg.run} and ckpt_path={cfg.ckpt_path}: give one of them")
    if cfg.run:
        runs = checkpoint_list(cfg.run, "run")
        return [str(best_checkpoint(Path(r))) for r in runs]
    if not cfg.ckpt_path:
        raise ValueError("give run=<run folder> (its best checkpoint) or ckpt_path=<checkpoint file>; an ensemble: "
                         "ckpt_path=[a.ckpt,b.ckpt] or run=[<run>,<run>]")
    return checkpoint_list(cfg.ckpt_path, "ckpt_path")


def check_eval_config(cfg: DictConfig) -> None:
    """capgen-eval's own settings and every number it is given, before a checkpoint is read."""
    check_numbers(cfg)
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split={cfg.split}: evaluate on val or test")


def run(cfg: DictConfig) -> float | None:
    """capgen-eval's Hydra job: evaluate with the command line's overrides, a failure ended in
    one paragraph. Returns the CIDEr score, the value a Hydra sweeper optimises."""
    with one_paragraph_on_failure("capgen-eval"):
        report = evaluate(cfg, list(HydraConfig.get().overrides.task))
    return report.get("CIDEr")


def evaluate(cfg: DictConfig, overrides: list[str]) -> dict:
    """Score cfg.ckpt_path (or the best checkpoint of cfg.run) on cfg.split; `overrides` are
    the command line's (for data.*). Writes the files named in the module docstring; returns
    the report written to metrics.json."""
    check_eval_config(cfg)
    device = resolve_device(cfg.device)
    paths = checkpoints_to_evaluate(cfg)
    module = load_checkpoints(paths, device, encoder_settings(cfg))
    # An ensemble's data and test decode are its first member's run's (capgen.lightning.inference).
    ckpt_path = paths[0]
    ensemble = len(paths) > 1
    if ensemble and module.net.attention_note:
        log.warning("the ensemble has no attention maps (no grounding score): %s", module.net.attention_note)
    decode = command_settings(cfg, module.decoding["test"], module.vocab.max_len)
    module.configure_test(decode=decode, metrics=cfg.metrics or default_metrics())
    run_cfg = run_config(ckpt_path)
    trained = module.trained_on
    data_cfg = eval_data_config(cfg, overrides, run_cfg, run_data_choice(ckpt_path) if run_cfg else None,
                                trained.image_size if trained else None, trained.data if trained else None, trained)
    if run_cfg is not None:  # a relative data path of the run's, read from another directory: other files
        run = run_of_checkpoint(ckpt_path)
        # Absolute: the command it suggests runs from the run's own directory (cd there first).
        given = f"run={os.path.abspath(run)}" if cfg.get("run") else f"ckpt_path={os.path.abspath(ckpt_path)}"
        check_working_directory(run, OmegaConf.create({"data": data_cfg}), run_cfg, given,
                                f"capgen-eval {shlex.quote(given)}")
    if ensemble and data_cfg.get("use_features"):
        log.info("data.use_features=false: an ensemble encodes the images with each member's own encoder, so it "
                 "reads images (a cached split's image cache, else the raw source), not one encoder's features")
        data_cfg.use_features = False
    # The encoder a feature cache must have been made by: the checkpoint's, its config and its weights.
    datamodule = hydra.utils.instantiate(data_cfg, vocab=module.vocab,
                                         prepare_args=eval_prepare_args(overrides, ckpt_path if run_cfg else None))
    datamodule.encoder = module.hparams.net_config["encoder"]  # after: instantiate would build it
    if datamodule.use_features:
        datamodule.encoder_weights = checkpoint_encoder_weights(module, ckpt_path, run_cfg)
    references = datamodule.references(cfg.split)
    if not references:  # before the loader, which would check an empty split's feature cache first
        other = "val" if cfg.split == "test" else "test"
        raise ValueError(
            f"split={cfg.split}: the {cfg.split} split has no images (data.source sizes, data.root or the annotation "
            f"files leave it empty), so there is nothing to score. Give it images, or score the other split "
            f"(split={other})."
        )
    loader = datamodule.eval_dataloader(cfg.split)
    module.set_references("test", references)
    module.set_scenes(datamodule.scenes(cfg.split))
    out = Path(cfg.paths.output_dir)
    log.info("evaluating %s on %s (%d images), decoding: %s, on %s",
             describe_checkpoints(paths), cfg.split, len(references), decode.describe(), device)

    accelerator, devices = ("cpu", 1) if device == "cpu" else ("gpu", [torch.device(device).index or 0])
    trainer = L.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out,
                        callbacks=[FollowFreeCores()])
    [logged] = trainer.test(module, dataloaders=loader, verbose=False)
    metrics = {k.removeprefix("test/"): v for k, v in logged.items() if not k.startswith("test/grounding")}
    grounding = module.last_test["grounding"]
    if grounding is not None:
        # JSON has no NaN: null when no generated word named an object of its scene.
        for key, value in (("grounding", grounding.score), ("grounding_chance", grounding.chance),
                           ("grounding_other", grounding.other)):
            metrics[key] = None if math.isnan(value) else value
        metrics["grounding_words"] = grounding.n_words
    rows = [{**r, "references": references[r["image_id"]]} for r in module.last_test["captions"]]

    # One checkpoint: its path; an ensemble: its members' paths, in the order given.
    report = {"checkpoint": paths if ensemble else str(ckpt_path), "split": cfg.split, "decode": module.last_test["decode"],
              "images": len(rows), **metrics}
    report.update(corpus_statistics(rows, datamodule, module.hparams.tokenizer))
    # Captions the decoder had not ended at the length cap (decode.max_len, else the vocabulary's).
    report["cut_captions"] = sum(bool(r.get("cut")) for r in rows)
    several = {r["image_id"]: r["captions"] for r in rows if len(r.get("captions", ())) > 1}
    if several:
        report.update(diversity(several, references, module.hparams.tokenizer, rows))
    captions = "".join(json.dumps({k: r[k] for k in CAPTION_KEYS if k in r}) + "\n" for r in rows)
    results = [{"image_id": int(r["image_id"]), "caption": r["caption"]} for r in rows]
    # Each file whole or not at all (capgen.atomic); metrics.json last, as the mark of a finished evaluation.
    for name, text in (("data.yaml", OmegaConf.to_yaml(data_cfg)), ("captions.jsonl", captions),
                       ("results.json", json.dumps(results)), ("metrics.json", json.dumps(report, indent=2) + "\n")):
        write_atomically(out / name, text.encode())
    print(metrics_table(report))
    print(f"wrote metrics.json, captions.jsonl, results.json to {out}")
    return report


def describe_checkpoints(paths: list[str] | str) -> str:
    """A checkpoint's path, or `the ensemble of N checkpoints (a, b, ...)`."""
    if isinstance(paths, str) or len(paths) == 1:
        return str(paths if isinstance(paths, str) else paths[0])
    return f"the ensemble of {len(paths)} checkpoints ({', '.join(map(str, paths))})"


def metrics_table(report: dict) -> str:
    decode = DecodeSettings.from_config(report["decode"]).describe()
    lines = [f"{describe_checkpoints(report['checkpoint'])} on {report['split']} ({report['images']} images, {decode})"]
    width = max(len(k) for k in report)
    for key, value in report.items():
        if key in ("checkpoint", "split", "images", "decode", "grounding_words", "novel_note"):
            continue
        shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        if key == "grounding" and "grounding_words" in report:
            shown += f"  ({report['grounding_words']} shape words)"
        if key == "novel_percent" and "novel_note" in report:
            shown += f"  ({report['novel_note']})"
        lines.append(f"  {key:<{width}}  {shown}")
    return "\n".join(lines)
