"""The command-line entry points (Hydra mains behind the capgen-* console scripts).

Importing this package sets up the process for every command: glibc malloc tuned (see
capgen.cli.allocator: every capgen command allocates and frees multi-MB tensors each step,
which otherwise page-fault), and Lightning's lines that say nothing about the run left out of
its output (capgen.cli.quiet).
"""

from .allocator import keep_freed_memory
from .quiet import quiet_lightning

keep_freed_memory()
quiet_lightning()
