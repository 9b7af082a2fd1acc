"""omniserve: serving for multimodal omni models."""
