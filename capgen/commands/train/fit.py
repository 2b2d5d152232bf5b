"""`train(cfg)`: what capgen-train runs, from a composed Hydra config to a finished run folder;
`run(cfg)`: the command's Hydra job around it (the folder's lock, its failure recorded, what next).

It builds the datamodule and the module and hands each what it needs from the other (the
model's encoder config and weights to the datamodule, for a feature cache; the splits' references and
scenes to the module), so neither reads the other through the trainer.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from ...config.checks import check_keys, check_numbers, check_types
from ...config.prepare_args import prepare_args
from ...config.resume_argv import said_before_logging
from ...data.datamodule import CaptionDataModule
from ...instantiate import instantiate
from ...lightning import tensorboard
from ...lightning.callbacks import BestEpochMetrics, CaptionSamples, FollowFreeCores, progress_bar
from ...lightning.hardware import configure_encoder, cpu_precision, encoder_settings
from ...lightning.hparams import log_final_hparams
from ...lightning.loggers import build_loggers, check_logger_packages, logger_runs
from ...lightning.module import CaptioningModule
from ...metrics.captions import default_metrics
from ...models.captioner import build_captioner
from ...runs import provenance
from ...runs.folders import training_image_size
from ...runs.init_from import check_coverage, init_checkpoint, load_network, words_not_in
from ...runs.lock import run_lock
from ...runs.records import (
    RunStopped,
    earlier_train_metrics,
    measured_on_stop,
    run_recording_failure,
    set_aside_old_errors,
    write_summary,
)
from ...runs.resume import check_resume_checkpoint, resume_checkpoint
from ...runs.tested import EarlierTest, forget_test_captions, write_test_captions
from ...vocab import Vocabulary
from ..failure import one_paragraph_on_failure, to_log_files
from .consistency import check_consistency
from .features import run_encoder_weights
from .next_steps import what_next

log = logging.getLogger(__name__)
# The splits a run leaves out that have no images, by run folder: train() finds them, run() says
# what to run next without them (a process's own runs; a notebook may train several).
_without_images: dict[Path, list[str]] = {}


def run(cfg: DictConfig) -> float | None:
    """capgen-train's Hydra job: train(cfg) under its run folder's lock (capgen.runs.lock; rank 0
    only, as on the command line), a failure recorded in the folder and ended in one paragraph;
    however it ends, where the run is and what to run next. Returns the best epoch's monitored
    value, the one a Hydra sweeper optimises."""
    if rank_zero_only.rank == 0:
        for warning in said_before_logging():  # now into the run's train.log too
            log.warning(warning)
    stopped_sweep = None  # the signal that stopped a sweep's job, which stops the sweep
    try:
        with run_lock(Path(cfg.paths.output_dir)) if rank_zero_only.rank == 0 else nullcontext():
            with one_paragraph_on_failure("capgen-train"):
                metrics = run_recording_failure(train, cfg)
    except RunStopped as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            stopped_sweep = "Ctrl-C" if e.signum == signal.SIGINT else signal.Signals(e.signum).name
        raise
    finally:  # completed, failed or interrupted: where the run is and what to run next
        if rank_zero_only.rank == 0:
            out = Path(cfg.paths.output_dir)
            without = _without_images.pop(out.absolute(), [])
            log.info("\n".join(what_next(out, cfg.monitor, bool(cfg.trainer.get("fast_dev_run")), without)))
            if stopped_sweep:  # the job's lines say how to continue it; nothing else says the sweep ended
                line = f"capgen-train: interrupted ({stopped_sweep}); the sweep stops here, its later jobs not started."
                print(line, file=sys.stderr, flush=True)
                to_log_files(line)
    return metrics.get(cfg.monitor)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) as configured; returns the final logged metrics."""
    check_train_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    encoder_run = encoder_settings(cfg)  # a bad value stops here, before any work
    device_type = "cpu" if trains_on_cpu(cfg) else "cuda"
    choose_precision(cfg)

    net_config = OmegaConf.to_container(cfg.model, resolve=True)
    net_config.pop("module")
    ckpt_path = resume_checkpoint(cfg)
    # Checked before anything is built; resuming keeps the checkpoint's word ids.
    start = check_resume_checkpoint(ckpt_path, net_config) if ckpt_path else None
    init = init_checkpoint(cfg, net_config)  # init_from=: a new run from another's network weights
    given_vocab = start.vocab if start else init.vocab if init else None
    choice = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
    given = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    # The capgen-prepare command its lines about caches give: this data config and its settings given.
    datamodule: CaptionDataModule = instantiate(cfg.data, vocab=given_vocab, prepare_args=prepare_args(choice, given))
    # Set after instantiate, which would build the encoder this config describes (drawing its
    # random weights from the seeded generator) instead of handing the config over.
    datamodule.encoder = net_config["encoder"]
    check_splits(cfg, datamodule)
    _without_images[out.absolute()] = splits_without_images(cfg, datamodule)
    if init is not None or start is not None:
        train_split = datamodule.source("train")
        captions = (c for i in range(len(train_split)) for c in train_split.captions(i))
    if init is not None:  # its vocabulary must cover the data's words (capgen.runs.init_from)
        check_coverage(init, captions, datamodule.min_freq, datamodule.max_len, cfg.get("init_from_min_coverage", 0.5))
    elif start is not None:  # resume= or ckpt_path= keeps the checkpoint's word ids: words new to it are <unk>
        _, missing = words_not_in(start.vocab, captions, datamodule.min_freq, datamodule.max_len)
        if missing:
            log.warning("the training captions hold %d word(s) that the vocabulary of the checkpoint this run continues "
                        "from (%d words, made from the data it started on) lacks, e.g. %s: the data changed since, and "
                        "this run trains and scores them as <unk>. To learn them, start a new run on this data.",
                        len(missing), len(start.vocab), ", ".join(missing[:5]))
    vocab = datamodule.vocab
    log.info("vocabulary: %d words, captions up to %d words", len(vocab), vocab.max_len)

    net = build_captioner(net_config, len(vocab))
    if init is not None:
        load_network(net, init)
        log.info("network weights from %s (init_from)", init.path)
    if datamodule.use_features:
        # The weights its checkpoints will hold must be those that made the features
        # (capgen.commands.train.features); refused here, before anything is written.
        datamodule.encoder_weights = run_encoder_weights(cfg, net, start, init)
        for split in used_splits(cfg):
            datamodule.check_features(split)
    # A frozen encoder computes in bf16 where the device does so natively (encoder_precision=auto);
    # a trained one follows the trainer's precision (capgen.lightning.hardware).
    configure_encoder(net.encoder, device_type=device_type, surrounding=str(cfg.trainer.get("precision", "32-true")),
                      **encoder_run)
    if cfg.get("compile"):
        net.use_torch_compile()
    # _recursive_=False: net_config holds _target_ nodes that must stay a config, not objects.
    module: CaptioningModule = instantiate(
        cfg.model.module, net=net, vocab=vocab, net_config=net_config, _recursive_=False
    )
    # The resolved data config too: a checkpoint copied out of the run is scored on its own splits.
    module.training_data = provenance.record(provenance.data_name(cfg.data, choice),
                                             str(OmegaConf.select(cfg, "data.source._target_", default="")),
                                             training_image_size(cfg), OmegaConf.to_container(cfg.data, resolve=True))
    module.set_references("val", datamodule.references("val"))
    if module.uses_scst:
        module.set_train_references(datamodule.references("train"))

    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    for callback in callbacks:
        if isinstance(callback, CaptionSamples):
            callback.pictures = datamodule.pictures  # the images, when batches carry features
    if cfg.trainer.get("enable_progress_bar", True) is not False:
        callbacks.append(progress_bar())  # Lightning's own bar, without its `v_num=ault` fragment
    follow_free_cores = FollowFreeCores()
    callbacks.append(follow_free_cores)
    loggers = build_loggers(cfg, start)
    if not loggers:  # logger=null: Lightning's learning-rate monitor refuses a trainer without loggers
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    overrides = {}
    if datamodule.use_features and cfg.trainer.get("strategy") == "ddp" and any(p.requires_grad for p in net.encoder.parameters()):
        # The encoder never runs on features, so its trainable weights get no gradient, which
        # DDP refuses unless told to look for unused parameters (each process decides alike).
        overrides["strategy"] = "ddp_find_unused_parameters_true"
        log.info("trainer.strategy=ddp_find_unused_parameters_true: the encoder's weights get no gradient on features")
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=list(loggers.values()), **overrides)
    check_train_batches(datamodule, trainer.world_size)  # the trainer knows the processes, each with its own batches
    # The run's result is its best epoch (the checkpoint kept and tested), not its last.
    best_epoch = next((c for c in callbacks if isinstance(c, BestEpochMetrics)), BestEpochMetrics())

    after_fit: list[tuple[dict[str, float], str]] = []  # what the training measured, once it is over

    def measured() -> tuple[dict[str, float], str]:
        """The metrics so far (train/* of the last step, val/* of the best epoch) and the best checkpoint."""
        if after_fit:  # a stop during the test: the test loop has reset the trainer's metrics by then
            return dict(after_fit[0][0]), after_fit[0][1]
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()} | best_epoch.best
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor == cfg.monitor), "")
        if start is not None and trainer.global_step == start.global_step:  # no step taken here
            if out.resolve() not in Path(start.path).resolve().parents:
                return {}, ""  # another run's checkpoint restored, nothing of this run's own (check_trained_on)
            # A resume of a finished run tests its best again: its train/* are the earlier
            # summary's, which the process that trained its last epoch measured.
            metrics = earlier_train_metrics(out) | metrics
        return metrics, best

    # A resume's earlier test/*, read before a checkpoint can be written: a resume with test=false
    # keeps them while the best checkpoint they were measured on is still the run's best.
    earlier_test = EarlierTest.read(out) if start is not None else None
    test_decode = None
    # MLflow / W&B runs started here, ended with the run's outcome; a run that stops before it
    # completes keeps what it measured for its failed or interrupted summary.json.
    with logger_runs(out, loggers), measured_on_stop(out, measured):
        save_run_vocab(out, vocab)  # once everything is built: a setting a constructor refuses leaves the folder untouched
        for logger in loggers.values():
            if isinstance(logger, TensorBoardLogger):
                # TensorBoard's CUSTOM SCALARS, the first screen: at the step this run's events start
                # from (a resume's, its checkpoint's), and not again where a resume finds it.
                tensorboard.write_layout(logger, cfg.monitor, start.global_step if start else 0)

        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        check_trained_on(cfg, start, trainer.global_step)
        metrics, best = measured()
        after_fit.append((dict(metrics), best))
        if cfg.test:
            if cfg.model.module.test.metrics is None:
                default_metrics()  # the metrics the module scores: said here when SPICE cannot be among them
            module.set_references("test", datamodule.references("test"))
            module.set_scenes(datamodule.scenes("test"))
            results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(results[0] if results else {})
            if trainer.is_global_zero and module.last_test.get("captions"):
                write_test_captions(out, module.last_test["captions"])  # for capgen-compare --paired
            test_decode = module.last_test.get("decode")
        elif earlier_test is not None and earlier_test.describes(out, best):
            metrics, test_decode = earlier_test.metrics | metrics, earlier_test.decode  # still its best's test
        elif earlier_test is not None and trainer.is_global_zero:
            forget_test_captions(out)  # the test of a best checkpoint this resume replaced
        log_final_hparams(trainer, cfg, metrics, best_epoch.step)
    if trainer.is_global_zero:
        if follow_free_cores.changes:
            log.warning("torch's thread count changed %d times during this run, following other processes' load: its "
                        "scores equal a rerun's only to float rounding, and training can drift from there. For a "
                        "rerun equal to the last digit, fix the count: OMP_NUM_THREADS=<n> capgen-train ...",
                        follow_free_cores.changes)
        write_summary(out, metrics, best, test_decode, follow_free_cores.changes)
        if cfg.get("resume"):
            set_aside_old_errors(out)
    return metrics


def check_trained_on(cfg: DictConfig, start, steps: int) -> None:
    """A new run started from another run's checkpoint (ckpt_path= outside its own folder) that
    took no step: the checkpoint had already reached trainer.max_epochs (or max_steps), and the
    run would test the other run's weights and call itself completed, with no checkpoint of its
    own. (A resume of a finished run in its own folder may do that: it tests its best again.)"""
    if start is None or steps != start.global_step:
        return
    if Path(cfg.paths.output_dir).resolve() in Path(start.path).resolve().parents:
        return
    epochs = start.trained.epochs if start.trained else "its"
    limits = [f"trainer.{k}={cfg.trainer[k]}" for k in ("max_epochs", "max_steps") if cfg.trainer.get(k) not in (None, -1)]
    raise ValueError(
        f"ckpt_path={start.path}: the checkpoint has trained {epochs} epoch(s) ({start.global_step} steps), as many as "
        f"{' and '.join(limits) or 'the trainer'} allow, so this run trained nothing. Give a larger trainer.max_epochs "
        f"to train on from it, or score it with capgen-eval ckpt_path={start.path}."
    )


def trains_on_cpu(cfg: DictConfig) -> bool:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def choose_precision(cfg: DictConfig) -> None:
    """On the CPU, a bf16 trainer.precision becomes 32-true where the CPU has no native bf16
    (it would run several times slower; capgen.lightning.hardware.cpu_precision warns), unless
    allow_slow_bf16=true. The config is changed in place, so the run's records say what ran."""
    allow = cfg.get("allow_slow_bf16", False)
    if not isinstance(allow, bool):
        raise ValueError(f"allow_slow_bf16={allow!r}: use true or false")
    if trains_on_cpu(cfg) and cfg.trainer.get("precision") is not None:
        cfg.trainer.precision = cpu_precision(cfg.trainer.precision, allow)


def check_splits(cfg: DictConfig, datamodule: CaptionDataModule) -> None:
    """Every split the run will use has images: a run without them would train, validate or
    test on nothing and still report itself completed."""
    skip = {"train": "", "val": " or skip validation with trainer.limit_val_batches=0 monitor=train/loss monitor_mode=min",
            "test": " or leave the test out with test=false"}
    for split in used_splits(cfg):
        if len(datamodule.source(split)) == 0:
            raise ValueError(
                f"data: the {split} split has no images (data.source sizes, data.root or the annotation files leave "
                f"it empty), so the run would {'train' if split == 'train' else 'score'} on nothing. Give the "
                f"{split} split images{skip[split]}."
            )


def splits_without_images(cfg: DictConfig, datamodule: CaptionDataModule) -> list[str]:
    """The splits the run leaves out (test with test=false, val with trainer.limit_val_batches=0)
    that have no images, as a data set without a test split has: capgen-eval cannot score them,
    so what capgen-train says at its end suggests no command on them. Read raw (no cache line in
    the log); a split whose files cannot be read (OSError, ValueError: the sources' one-paragraph
    errors) is not counted: capgen-eval names its error."""
    without = []
    for split in ("val", "test"):
        if split in used_splits(cfg):
            continue
        try:
            empty = len(datamodule.source_factory(split=split)) == 0
        except (OSError, ValueError):  # unreadable: counted as not empty; capgen-eval gives the error in full
            empty = False
        if empty:
            without.append(split)
    return without


def used_splits(cfg: DictConfig) -> list[str]:
    """The splits the run reads: train, val unless no batch validates, test unless test=false."""
    uses = {"train": True, "val": cfg.trainer.get("limit_val_batches", 1.0) != 0, "test": bool(cfg.test)}
    return [split for split, used in uses.items() if used]


def check_train_batches(datamodule: CaptionDataModule, world_size: int) -> None:
    """The train split gives each of the `world_size` processes at least one whole batch: the
    loader drops the incomplete last one, so with fewer images a run would train on nothing and
    still report itself completed."""
    if datamodule.train_batches(world_size) > 0:
        return
    images = len(datamodule.source("train"))
    each = math.ceil(images / world_size)
    per_process = f", {each} for each of the {world_size} processes (a batch is per process)," if world_size > 1 else ","
    raise ValueError(
        f"data: the train split has {images} images{per_process} fewer than data.batch_size={datamodule.batch_size}, "
        f"and training drops an epoch's incomplete last batch, so the run would train on nothing and still report "
        f"itself completed. Lower data.batch_size to {each} or less, or give the train split more images."
    )


@rank_zero_only
def save_run_vocab(out: Path, vocab: Vocabulary) -> None:
    """<out>/vocab.json, written by rank 0 alone: two DDP processes writing it at once shared
    vocab.json.tmp (capgen.atomic), and one's rename found the file gone (FileNotFoundError:
    the run failed at its start, seen in a two-process sweep job)."""
    vocab.save(out / "vocab.json")


def check_train_config(cfg: DictConfig) -> None:
    """The settings a run would only trip over later (an optimizer given lr=abc, a run that
    trains on nothing, a monitor no epoch logs), checked before anything is built; each error
    names the key, the value and the fix. Ranges of single settings are checked by the
    constructors they go to, types against their annotations (capgen.config.checks)."""
    check_numbers(cfg)
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r}: must be a whole number, e.g. seed=42")
    if cfg.monitor_mode not in ("max", "min"):  # before the callbacks it is handed to
        raise ValueError(f"monitor_mode={cfg.monitor_mode!r}: must be max (scores such as val/CIDEr) or min (val/loss)")
    check_logger_packages(cfg.get("logger"))  # an optional extra missing: the pip command, before anything is built
    nodes = ["model.encoder", "model.decoder", "model.module", "data", "trainer"]
    nodes += [f"{group}.{name}" for group in ("callbacks", "logger") for name in cfg.get(group) or {}]
    for key in nodes:
        node = OmegaConf.select(cfg, key)
        if isinstance(node, DictConfig):
            check_keys(node, key)  # +model.decoder.hiden_dim=3: the close match, not a TypeError once built
            check_types(node, key)
    trainer = cfg.trainer
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise ValueError(
                f"trainer.{key}=0: the run would train on nothing and still report itself completed. Give "
                f"trainer.{key} a positive value, or evaluate an existing checkpoint with capgen-eval."
            )
    if trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={trainer.accelerator}: no CUDA GPU is available here (torch sees none). Train on the "
            "CPU with trainer=cpu, or in several CPU processes with trainer=ddp_cpu."
        )
    clip = trainer.get("gradient_clip_val")
    if clip is not None and clip < 0:
        raise ValueError(f"trainer.gradient_clip_val={clip}: must be at least 0 (0 or null: no clipping), e.g. 1.0")
    check_consistency(cfg)  # settings that contradict each other or the run (capgen.commands.train.consistency)
