"""LCO-EMB: language-centric omnimodal embeddings from generative (M)LLMs (docs/papers.md section 2)."""
