"""The experiment loggers of a run (conf/logger/): TensorBoard (the default), CSV, MLflow and
Weights & Biases, several at once (`logger=[tensorboard,mlflow]`) or none (`logger=null`).

The CSV, MLflow and W&B loggers here are Lightning's, with what a capgen run needs on top:

- MLflow and W&B are optional extras ([mlflow], [wandb]). Without the package, the logger
  setting stops the command with the pip command to run before anything is written: on the
  command line before Hydra starts (capgen.config.plugins), for a resume before the run
  folder is touched (capgen.runs.resume), and in `train(cfg)` before anything is built.
- Their runs are started before training (`logger_runs`), so that a tracking server that
  cannot be reached stops the run at once, not at its first logged point; their ids go to
  <run>/logger_runs.json. At the end each run is ended with the outcome: MLflow FINISHED,
  FAILED or KILLED (a signal), the W&B run finished, so that a sweep's next job (same
  process) starts its own run instead of logging into this one.
- `resume=<run>` continues each logger's run (`resume_kwargs`). TensorBoard and CSV append
  to the run's own folder and drop what the interrupted run logged after the checkpoint it
  resumes from (`purge_step`), so the curves are those of one uninterrupted run (a new
  TensorBoard run opens with a session start of its own, so that TensorBoard's Python plugin
  loader takes a resume's for a restart too). MLflow logs
  into the same MLflow run (when the tracking URI is the one the run logged to) and W&B
  resumes the same run id; neither can drop points, so a run killed between two checkpoints
  shows the steps after the last one twice there. MLflow keeps a parameter's first value: a
  setting changed at the resume (`trainer.max_epochs=20`) stays at its first value, the new
  one is set as the tag `resumed/<name>` (and is in .hydra/config.yaml). MLflow's parameters
  are named as the overrides are (`model.decoder.hidden_dim`, `group.model`).

Sample captions and figures go to every logger that shows them: capgen.lightning.samples.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from hydra.utils import get_object
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig

from ..atomic import write_atomically
from ..instantiate import instantiate
from ..runs.checkpoint import Checkpoint
from . import compat

log = logging.getLogger(__name__)

# <run>/logger_runs.json: {"<logger key>": {what resume needs to continue that logger's run}}
RECORD = "logger_runs.json"


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger: <save_dir>/<name>/<version>/metrics.csv (every logged scalar, a
    row per step) and hparams.yaml. `purge_step` (set on resume): keep the rows before that
    step and append, where Lightning's would delete the file."""

    def __init__(self, save_dir: str, name: str = "csv", version: str | None = None,
                 flush_logs_every_n_steps: int = 100, purge_step: int | None = None) -> None:
        super().__init__(save_dir, name=name, version=version, flush_logs_every_n_steps=flush_logs_every_n_steps)
        self.purge_step = purge_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self.purge_step is None:
            return super().experiment
        return compat.appending_csv_writer(self, self.purge_step)


class MLflowLogger(MLFlowLogger):
    """Lightning's MLflow logger for one capgen run (see the module docstring): a file store in
    `save_dir` unless `tracking_uri` names another store or a tracking server; `run_id` (set
    on resume) continues that run."""

    package, extra, pip = "mlflow", "mlflow", "mlflow-skinny"  # see missing_package

    def __init__(self, save_dir: str, experiment_name: str = "capgen", run_name: str | None = None,
                 tracking_uri: str | None = None, tags: dict[str, str] | None = None, run_id: str | None = None) -> None:
        uri = self.store_uri(tracking_uri, save_dir)
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store (in maintenance mode there) unless this opts in; the
            # store in the run folder is capgen's default, so it opts in, for this process only.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=uri, tags=tags,
                             save_dir=save_dir, run_id=run_id)
        except ImportError:
            raise  # mlflow itself missing: check_logger_packages says so before this is built
        except Exception as e:  # MLflow's own error types for a URI it cannot use; the message is what matters
            raise ValueError(f"logger.mlflow.tracking_uri={uri}: MLflow cannot use it ({_one_line(e)}). {_URI_HELP}") from e
        self.resumed, self.tracking_uri = run_id is not None, uri

    @staticmethod
    def store_uri(tracking_uri: str | None, save_dir: str) -> str:
        return tracking_uri or f"file:{Path(save_dir).absolute()}"

    def open_run(self) -> dict[str, str]:
        """Start the MLflow run now (or mark the resumed one running again); what resume needs."""
        _check_reachable(self.tracking_uri)
        given = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            run_id = self.run_id  # creates the experiment and the run on first use
            if self.resumed:
                self.experiment.update_run(run_id, status="RUNNING")
        except Exception as e:
            raise ValueError(
                f"logger.mlflow.tracking_uri={self.tracking_uri}: MLflow could not start the run there "
                f"({_one_line(e)}). {_URI_HELP}"
            ) from e
        finally:
            # Creating it calls mlflow.set_tracking_uri, which sets MLFLOW_TRACKING_URI for the whole
            # process: conf/logger/mlflow.yaml reads it, so a sweep's next job would log to this job's store.
            if given is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = given
        return {"tracking_uri": self.tracking_uri, "run_id": run_id}

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any]) -> None:
        # Named as the overrides are (model.decoder.hidden_dim, group.model.encoder): MLflow's file
        # store keeps a parameter in a file at its name's path, so `group/model` and
        # `group/model/encoder` cannot both be parameters there.
        params = {k.replace("/", "."): v for k, v in _flat(params).items()}
        if self.resumed:
            params = self._keep_first_values(params)
        super().log_hyperparams(params)

    def _keep_first_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` less those the run logged before its resume with another value (MLflow refuses
        to change a parameter); their new values become `resumed/<name>` tags."""
        logged = self.experiment.get_run(self.run_id).data.params
        # Lightning's MLFlowLogger stores str(value) cut at 250 characters.
        changed = {k: str(v)[:250] for k, v in params.items() if k in logged and logged[k] != str(v)[:250]}
        for key, value in changed.items():
            self.experiment.set_tag(self.run_id, f"resumed/{key}", value)
        if changed:
            log.warning("MLflow run %s keeps the parameters' values from before the resume for %s; the resumed "
                        "values are its resumed/* tags", self.run_id, ", ".join(sorted(changed)))
        return {k: v for k, v in params.items() if k not in changed}

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        super().finalize("KILLED" if status == "interrupted" else status)


_URI_HELP = ("Give a tracking server (logger.mlflow.tracking_uri=http://host:5000) or a store "
             "(file:/abs/path/mlruns, sqlite:////abs/path/mlflow.db), or leave tracking_uri unset (and "
             "MLFLOW_TRACKING_URI unset) for a file store in the run folder.")


def _check_reachable(uri: str) -> None:
    """A tracking server that does not answer: an error at once (MLflow's own client retries for
    minutes before it gives up). Any HTTP answer, an error page included, means it is there."""
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(uri, timeout=10).close()
    except urllib.error.HTTPError:
        return
    except OSError as e:  # URLError, timeouts, refused connections
        raise ValueError(
            f"logger.mlflow.tracking_uri={uri}: no MLflow tracking server answers there ({_one_line(e)}). "
            f"Start it (mlflow server), or check the address. {_URI_HELP}"
        ) from e


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger for one capgen run. `mode`: offline (conf/logger/wandb.yaml's
    default when WANDB_MODE is unset: no network or account needed, `wandb sync` uploads the
    run later), online, disabled. `id` (set on resume) continues that run."""

    package, extra, pip = "wandb", "wandb", "wandb"  # see missing_package

    def __init__(self, save_dir: str, project: str = "capgen", name: str | None = None,
                 mode: Literal["offline", "online", "disabled", "shared", "dryrun"] = "offline",
                 entity: str | None = None, id: str | None = None) -> None:
        # mode goes to wandb.init; Lightning's offline=True would set WANDB_MODE for the whole process.
        super().__init__(name=name, save_dir=save_dir, project=project, id=id, mode=mode, entity=entity)
        self.mode, self.started = mode, False

    def open_run(self) -> dict[str, str]:
        """Start the W&B run now; what resume needs."""
        try:
            run = self.experiment
            self.started = True
        except Exception as e:  # wandb's own error types; the message is what matters
            raise ValueError(
                f"logger.wandb.mode={self.mode}: W&B could not start the run ({_one_line(e)}). Without a network "
                "or a W&B account, log offline (logger.wandb.mode=offline, the default while WANDB_MODE is unset) "
                "and upload later with wandb sync <run dir>/wandb/offline-run-*; to log online, run wandb login first."
            ) from e
        return {"id": run.id}

    def end_run(self, status: str) -> None:
        if self.started:  # by open_run, on rank 0
            self.experiment.finish(exit_code=0 if status == "success" else 1)
            self.started = False


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"decoder": {"hidden_dim": 512}}} -> {"model.decoder.hidden_dim": 512}"""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:400] or type(e).__name__


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module blocked in sys.modules (None) has no spec
        return False


def missing_package(setting: str, target: str) -> str | None:
    """The one-paragraph message for a logger (its config's `_target_`) whose optional package
    is not installed, naming `setting` (the override, e.g. logger=[tensorboard,mlflow]); else None."""
    cls = get_object(target)
    package = getattr(cls, "package", None)
    if package is None or _installed(package):
        return None
    return (f"{setting}: the {package} logger needs the {package} package, capgen's optional '{cls.extra}' extra, "
            f'which is not installed here. Install it with pip install -e ".[{cls.extra}]" (or pip install {cls.pip}), '
            "or log with another logger (logger=tensorboard, logger=csv).")


def check_logger_packages(loggers: DictConfig | None, setting: str | None = None) -> None:
    """ModuleNotFoundError with missing_package's message for the first logger in `loggers`
    (the `logger` node: {key: {_target_: ...}}) whose package is not installed."""
    for key, node in (loggers or {}).items():
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        message = missing_package(setting or f"logger={key}", target) if isinstance(target, str) else None
        if message:
            raise ModuleNotFoundError(message)


def resume_kwargs(node: DictConfig, start: Checkpoint | None, saved: dict[str, Any]) -> dict[str, Any]:
    """Extra constructor arguments for a logger of a resumed run (see the module docstring):
    `saved` is its entry in the run's logger_runs.json."""
    cls = get_object(node._target_)
    if start is None:
        # A new TensorBoard run opens with a session start at step 0 (what purge_step writes;
        # nothing before it to drop). TensorBoard's Python plugin loader (--load_fast=false)
        # takes a run's first session start for its beginning, not a restart: without this one
        # it would ignore the first resume's and show the interrupted run's tail twice.
        return {"purge_step": 0} if issubclass(cls, TensorBoardLogger) else {}
    if issubclass(cls, (TensorBoardLogger, CSVLogger)):
        kwargs: dict[str, Any] = {"purge_step": start.global_step}
        name = node.get("name", inspect.signature(cls).parameters["name"].default)
        # The version is named by the command-line overrides, which a resume changes (resume=,
        # trainer.max_epochs=...): keep the folder the interrupted run wrote last.
        runs = [p for p in (Path(node.save_dir) / name).glob("*") if p.is_dir()]
        if runs:
            kwargs["version"] = max(runs, key=lambda p: p.stat().st_mtime).name
        return kwargs
    if issubclass(cls, MLflowLogger) and saved.get("run_id"):
        uri = MLflowLogger.store_uri(node.get("tracking_uri"), node.save_dir)
        if saved.get("tracking_uri") == uri:
            return {"run_id": saved["run_id"]}
        log.warning("resume: the run logged to MLflow run %s at %s; it now logs to %s, where a new MLflow run starts",
                    saved["run_id"], saved.get("tracking_uri"), uri)
    if issubclass(cls, WandbLogger) and saved.get("id"):
        return {"id": saved["id"]}
    return {}


def build_loggers(cfg: DictConfig, start: Checkpoint | None) -> dict[str, Logger]:
    """The run's loggers by their key in cfg.logger, each told how to continue on resume."""
    saved = read_record(Path(cfg.paths.output_dir)) if start is not None else {}
    return {key: instantiate(node, **resume_kwargs(node, start, saved.get(key, {})))
            for key, node in (cfg.get("logger") or {}).items()}


def read_record(run: Path) -> dict[str, Any]:
    path = run / RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s cannot be read (%s): each MLflow / W&B logger starts a new run", path, e)
        return {}
    return record if isinstance(record, dict) else {}


@contextmanager
def logger_runs(run: Path, loggers: dict[str, Logger]) -> Iterator[None]:
    """Start the loggers' runs and record their ids (rank 0), then end every logger with the
    outcome of the block: success, interrupted (a signal) or failed."""
    try:
        if rank_zero_only.rank == 0:
            opened = {key: lg.open_run() for key, lg in loggers.items() if hasattr(lg, "open_run")}
            if opened:
                record = read_record(run) | opened
                write_atomically(run / RECORD, (json.dumps(record, indent=2) + "\n").encode())
        yield
    except BaseException as e:
        status = "interrupted" if isinstance(e, (SystemExit, KeyboardInterrupt)) else "failed"
        for logger in loggers.values():
            try:
                _end(logger, status)
            except Exception as end_error:  # the run's own error stays the one raised
                log.error("ending the %s logger after the run %s failed too: %s", type(logger).__name__, status, end_error)
        raise
    for logger in loggers.values():
        _end(logger, "success")


def _end(logger: Logger, status: str) -> None:
    logger.finalize(status)
    if isinstance(logger, WandbLogger):
        logger.end_run(status)
