"""The training program on top of the library: the LightningModule, its callbacks, the
checkpoint format and its one reader, run folders, resume, evaluation and captioning runs,
config registration, and every private Lightning access (compat)."""
