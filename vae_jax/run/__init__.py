"""A run, from a config to a workdir: the modes (``experiment``: train, eval, sample,
export), what is built from the config (``build``), checkpoints (``checkpoint``), trained
parameters and their files (``params_file``), the workdir's lock, signals and error
reports (``runtime``), the metrics records (``logs``), grid sweeps (``sweep``) and the
persistent compilation cache (``jit_cache``).
"""
