"""Compiled backend (msdfast._C): registered when the extension loaded. Filled in by the build work."""
