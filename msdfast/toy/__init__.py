"""The 2D toy world of the MSD paper (sec. 4.1-4.2): data sets, their schedule, training, metrics and plots.

Light on import: only the data sets and the toy VP schedule load here; denoisers live in
msdfast.denoisers (gmm, empirical, mlp), samplers in msdfast.samplers (ddim, edm).
"""
from .datasets import (DATASETS, GMM, TOY_SCHEDULE, TREE_CLASS_IDS, TREE_CLASSES, ToyDataset,  # noqa: F401
                       load_dataset, pinwheel_points, spiral_points, toy_schedule, tree_gmm)
