"""Triton backend: registered when triton can run. Filled in by the kernel work."""
