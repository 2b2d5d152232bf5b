"""Building an object from its Hydra config node (`_target_`), as every capgen object is built."""

from __future__ import annotations

import hydra
from hydra.errors import InstantiationException


def instantiate(node, **kwargs):
    """hydra.utils.instantiate, except that a constructor's own error, which names the setting
    and the fix (a ValueError, an OSError such as a missing weight file, an ImportError such as
    a missing optional package), is raised as it is, not inside Hydra's multi-line wrapper."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, (ValueError, OSError, ImportError)):
            raise e.__cause__ from None
        raise
