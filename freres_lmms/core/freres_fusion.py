"""The trainable parts of Fre-Res (paper appendix E.1), initialised to the training-free default.

``FreResFusion`` holds the RawAdapter (raw anchor tokens), one token adapter per Fre-Res token
kind (dynamic P-tokens, summaries, statics), the Spatial-Guided Absorber's query/key/value
projections, two type embeddings (raw branch, Fre-Res branch) and two branch gates. At
initialisation every adapter and projection is the identity, the type embeddings are zero and the
gates one, so a fresh module gives exactly the training-free method's output (tested): training
moves it from there. ``save_pretrained(dir)`` writes ``config.json`` and ``model.safetensors``;
``FreResMethod(adapter=dir)`` (model_args ``adapter=PATH``) loads one. No trained weights exist:
the paper trains these on its own data, which is not public.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .base import CompressionError

FORMAT = "freres-fusion-v1"
TOKEN_KINDS = ("dynamic", "summary", "static")


def _identity(dim: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(dim, dim, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        if bias:
            layer.bias.zero_()
    return layer


class FreResFusion(nn.Module):
    """RawAdapter, token adapters, absorber projections, type embeddings and branch gates."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.raw_adapter = _identity(dim)
        self.token_adapters = nn.ModuleDict({kind: _identity(dim) for kind in TOKEN_KINDS})
        self.query, self.key, self.value = (_identity(dim, bias=False) for _ in range(3))
        self.type_embeddings = nn.Parameter(torch.zeros(2, dim))  # 0: raw anchors, 1: Fre-Res tokens
        self.gates = nn.Parameter(torch.ones(2))

    def raw(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.gates[0] * (self.raw_adapter(tokens) + self.type_embeddings[0])

    def fre(self, tokens: torch.Tensor, kind: str) -> torch.Tensor:
        return self.gates[1] * (self.token_adapters[kind](tokens) + self.type_embeddings[1])

    def check(self, dim: int) -> None:
        if dim != self.dim:
            raise CompressionError(f"freres adapter is for {self.dim}-dim features, the model gives {dim}")

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"format": FORMAT, "dim": self.dim}, indent=1) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(out / "model.safetensors"))
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "FreResFusion":
        from safetensors.torch import load_file

        path = Path(directory)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CompressionError(f"freres adapter: no config.json in {path}")
        config = json.loads(config_file.read_text())
        if config.get("format") != FORMAT:
            raise CompressionError(f"freres adapter: {config_file} is not a {FORMAT} file")
        module = cls(int(config["dim"]))
        module.load_state_dict(load_file(str(path / "model.safetensors")))
        return module.eval()
