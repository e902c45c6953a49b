"""Adapters to other frameworks (threestudio guidance contract)."""
