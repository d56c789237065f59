"""The runtime: what runs a model on JAX devices.

Data pipelines (seqio → numpy batches), partitioning over a device mesh, checkpoints,
losses and optimizers, and the library functions behind the subcommands: ``train``,
``evaluate``, ``infer`` and ``export``. Modules are imported on demand (they pull in JAX,
TensorFlow or seqio); this package itself imports nothing heavy.
"""
