"""Distributed helpers: the CPU/gloo collective shim and the tensor-parallel equality check.

Nothing here is imported by the generated models; ``gloo_shim.install()`` is an explicit opt-in.
"""
