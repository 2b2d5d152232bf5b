"""A run folder on disk: the checkpoint format and its one reader, what a checkpoint was trained
on, the records a run writes (summary.json, error.txt, test captions), finding runs and reading
their saved config, the folder's lock, and the checks behind a resume and init_from."""
