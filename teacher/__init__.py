"""Teachers: the registry, prompt building, and model preparation."""
