"""RAE + DiT^DH: diffusion transformers with representation autoencoders (docs/papers.md section 1)."""
