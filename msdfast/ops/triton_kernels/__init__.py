"""Triton kernels, one module per op (<op>.py), imported automatically by msdfast.ops._triton when Triton can
run. Each module decorates its launcher with `@msdfast.ops._triton.triton_backend("<op>")`; ddim_step.py is the
template."""
