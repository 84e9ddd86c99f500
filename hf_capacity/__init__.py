"""hf-capacity: measure and grow the factual knowledge a language model stores per parameter."""

__version__ = "0.1.0"
