"""Tensor-parallel checking on any machine: the CPU/gloo collective shim (``gloo_shim``), the 2-process launcher
(``launch``) and the code each rank runs (``worker``). The TP layers themselves are ``modbuild.nn.parallel``.

Nothing here is imported by the generated models; ``gloo_shim.install()`` is an explicit opt-in.
"""
