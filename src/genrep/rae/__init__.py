"""RAE + DiT^DH: diffusion transformers with representation autoencoders (PAPERS.md section 1)."""
