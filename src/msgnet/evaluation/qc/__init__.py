"""Quality control of generated image + annotation pairs (``msgnet qc``, ``msgnet sample --qc``)."""
