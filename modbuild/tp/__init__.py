"""Tensor parallelism on any machine: the CPU/gloo collective shim (``gloo_shim``), the 2-process launcher
(``launch``), a pool of two ranks that serves a whole run's requests (``pool``) and loading a full checkpoint into
a TP model (``split``). The TP layers themselves are ``modbuild.nn.parallel``; the TP checks that use all this are
``modbuild.verify.tp_run``/``tp_worker``. Nothing here imports ``modbuild.verify``.

Nothing here is imported by the generated models; ``gloo_shim.install()`` is an explicit opt-in.
"""
