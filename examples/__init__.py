"""The examples of optax_decay: runnable scripts and the modules they share (see README.md)."""
