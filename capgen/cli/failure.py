"""How a capgen command that fails ends: one paragraph on stderr (the error's own message,
see capgen.training.run_dir.one_paragraph) and exit status 1, with the traceback in
error.txt in the command's output folder, instead of Hydra's printed stack.

`HYDRA_FULL_ERROR=1` keeps Hydra's full traceback, as Hydra documents; in a sweep (-m) the
error goes to Hydra, which goes on with the other jobs and reports failures at the end.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from ..atomic import write_atomically
from ..training.run_dir import RunFailed, one_paragraph


@contextmanager
def one_paragraph_on_failure(command: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode != RunMode.RUN:
            raise
        if isinstance(e, RunFailed):  # capgen-train has recorded it in the run folder already
            raise SystemExit(f"{command}: {e}") from None
        error_file = Path(HydraConfig.get().runtime.output_dir) / "error.txt"
        write_atomically(error_file, "".join(traceback.format_exception(e)).encode())
        raise SystemExit(f"{command}: {one_paragraph(e)} (traceback in {error_file})") from None
