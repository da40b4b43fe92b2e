"""LCO-EMB: language-centric omnimodal embeddings from generative (M)LLMs (PAPERS.md section 2)."""
