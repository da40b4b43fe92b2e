"""The thin shared layer every system stands on.

- :mod:`~genrep.core.config`       typed dataclass configs from YAML plus ``key=value`` overrides
- :mod:`~genrep.core.rundir`       the ``--out`` directory: config.yaml, metrics.json, logs, atomically
- :mod:`~genrep.core.checkpoint`   safetensors checkpoints with optimizer/EMA/scheduler/RNG state
- :mod:`~genrep.core.ema`          exponential moving average of a model
- :mod:`~genrep.core.lr_schedule`  linear warmup + cosine or linear decay
- :mod:`~genrep.core.runtime`      seeding, device choice, environment description
- :mod:`~genrep.core.distributed`  torchrun initialisation, rank-0 logging, gather keeping local grads
- :mod:`~genrep.core.progress`     rich progress bars
- :mod:`~genrep.core.report`       Markdown + HTML reports with pictures
- :mod:`~genrep.core.assets`       the registry of bundled offline models and data
"""
