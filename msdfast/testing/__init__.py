"""Test helpers (tiny models built from configs; no network)."""
