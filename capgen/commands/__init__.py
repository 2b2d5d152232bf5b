"""The capgen-* commands, one module or subpackage each (train, eval, caption, prepare, compare,
demo): what each one does with its composed Hydra config. They share failure.py, how a command
that fails ends; no command imports another."""
