"""The paper's baselines, on msgnet's harness: the layout-conditioned VQ-VAE ("cVQ-VAE", cvqvae.py)."""
