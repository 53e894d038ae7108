"""Simulated robots: Meta-World environments, scripted experts and demo collection."""
