#!/usr/bin/env bash
# capgen's GPU paths in one command, one line per check (ok / failed: why / skipped: why); under
# 8 minutes on one GPU. Without a GPU every check is skipped and the exit status is 0.
# Options are scripts/gpu_check.py's (--budget SECONDS, --keep DIR, --dry-run).
set -euo pipefail
exec python "$(dirname "$0")/gpu_check.py" "$@"
