"""msgnet: multi-object image generation with object-level annotations (MSGNet)."""

__version__ = "0.1.0"
