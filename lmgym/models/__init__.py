"""Language models: the embedded default, loading of local checkpoints, and generation."""
