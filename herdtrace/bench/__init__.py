"""bench: the seed experiment, every mode, side by side."""
