"""Layers shared by the generated models."""
