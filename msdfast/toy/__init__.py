"""The 2D toy world of the MSD paper (sec. 4.1-4.2): data sets (`datasets`), named denoisers (`models`),
training (`train`), the distillation protocol and study (`protocol`, `study`), metrics, plots and the
MSD solver study (`solver_study`). Import the submodule you need; nothing is re-exported here.
"""
