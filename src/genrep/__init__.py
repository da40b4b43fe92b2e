"""genrep: generative models meet representations.

Three October-2025 research systems as usable software:

- :mod:`genrep.rae`    -- RAE + DiT^DH, diffusion in a frozen representation encoder's latent.
- :mod:`genrep.lco`    -- LCO-EMB, omnimodal embeddings from generative (M)LLMs.
- :mod:`genrep.diting` -- DITING, web-novel translation benchmark and AgentEval.

:mod:`genrep.core` holds the thin shared layer (configs, run directories, checkpoints,
distributed helpers, progress, bundled offline assets).
"""

# The only place the version is written: pyproject.toml reads it from here (setuptools dynamic version).
__version__ = "0.1.0"
