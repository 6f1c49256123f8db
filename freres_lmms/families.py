"""The model families freres-lmms supports (ids as in ``{method}_{family}``); import-light."""

FAMILIES = ("qwen2vl", "qwen2_5vl", "qwen3vl")
