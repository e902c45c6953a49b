"""Sweeps: prompts x seeds x methods x option grids of a job (`msdfast sweep SPEC`), sharded over torchrun ranks
and SLURM array tasks, with the model loaded once per process, restart-safe run folders and a summary.

spec (SPEC file -> runs with stable ids), shard (which runs this process takes), runner (run / resume / skip
each run through the job's own run function), summary (summary.json / .md, contact sheet), cli (the command).
"""
