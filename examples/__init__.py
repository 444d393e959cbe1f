"""The examples of optax_decay: runnable scripts and the modules they share (see README.md).

Shared modules: ``optimizers`` (the registry and the conventions), ``data``, ``models``,
``grid`` (vmapped hyperparameter grids), ``cli`` and ``reporting``.
"""
