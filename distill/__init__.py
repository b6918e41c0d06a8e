"""Distillation: the dataset schema, KD losses, training, and the `make distill` pipeline."""
