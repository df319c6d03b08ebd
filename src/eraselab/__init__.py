"""eraselab: a reproducible pipeline to erase concepts from text-to-image diffusion models,
attack the erased models, and measure what came back."""

__version__ = "0.1.0"
