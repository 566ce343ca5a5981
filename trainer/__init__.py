"""codetune: fine-tune embedding models for code retrieval."""

__version__ = "0.1.0"
