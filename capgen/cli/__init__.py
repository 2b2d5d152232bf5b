"""The command-line entry points (Hydra mains behind the capgen-* console scripts).

Importing this package tunes glibc malloc for the process (see capgen.cli.allocator): every
capgen command allocates and frees multi-MB tensors each step, which otherwise page-fault.
"""

from .allocator import keep_freed_memory

keep_freed_memory()
