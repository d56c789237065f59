"""Metrics from TensorBoard event files: reading (``events``), naming and best steps
(``table``), output formats (``render``, ``plot``) and ``parse_metrics`` (``parse``).
Nothing here imports JAX or seqio; TensorBoard is imported inside the readers."""
