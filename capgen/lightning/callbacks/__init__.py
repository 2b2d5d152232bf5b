"""Every callback capgen-train runs, all listed in conf/callbacks/default.yaml:

    BestCheckpoint         the best epoch's checkpoint; its state follows a moved run folder
    LastCheckpoint         last.ckpt, the file a run resumes from
    ExactResume            random generators and the loader's place, so a resume is exact
    FlushLogsOnCheckpoint  logged points are on disk before each checkpoint
    FiniteLossGuard        a NaN/inf loss or update stops (keeping the last good weights) or is skipped
    BatchNormPolicy        BatchNorm statistics per batch or frozen, and DDP's sync checked
    BestEpochMetrics       the val/* metrics of the best epoch by the monitored metric
    EpochLine              one log line per validation: the epoch's scores, the best so far, the time
    EarlyStopping          stop when the monitored metric has not improved for `patience` validations (off by default)
    CaptionSamples         generated vs reference captions and attention figures, to every logger that shows them
    StopOnSignal           SIGTERM / SIGUSR1: save last.ckpt at the step's end, stop, record "interrupted"

and two that follow the environment, not a setting, added by capgen-train itself: Lightning's
progress bar (progress_bar) and FollowFreeCores (torch's threads follow the free cores).
"""

from .batchnorm import BatchNormPolicy
from .checkpoints import BestCheckpoint, ExactResume, LastCheckpoint, RelocatableCheckpoint
from .early_stopping import EarlyStopping
from .faults import FiniteLossGuard, NonFiniteLossError, NonFiniteWeightsError, RunInterrupted, StopOnSignal
from .log_flush import FlushLogsOnCheckpoint
from .progress import EpochLine, progress_bar
from .results import BestEpochMetrics, CaptionSamples
from .threads import FollowFreeCores

__all__ = [
    "BatchNormPolicy", "BestCheckpoint", "BestEpochMetrics", "CaptionSamples", "EarlyStopping", "EpochLine", "ExactResume",
    "FiniteLossGuard",
    "FlushLogsOnCheckpoint", "FollowFreeCores", "LastCheckpoint", "NonFiniteLossError", "NonFiniteWeightsError", "RelocatableCheckpoint",
    "RunInterrupted", "StopOnSignal", "progress_bar",
]
