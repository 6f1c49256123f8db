"""Token counts of the Fre-Res presets beside the paper's (Table 5 rows, Table 3's dense row).

    python scripts/freres_counts.py          # -> results/freres_counts.json, prints a Markdown table

Counts need no model: each preset runs on a synthetic clip of the paper's shapes (24x24 latent
grids; 16 frames for Table 5, 1800 for the dense row) from ``freres_lmms.tokens.drifting_features``
(a base grid, a slow drift and small noise), on the CPU in fp32 with D=64. Table 5 counts only
the temporal branch (P-tokens, summaries, statics); what the energy filter keeps depends on the
clip, so ours are this clip's, not the paper's videos'. See docs/methods.md for our reading of Table 5.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from bench_compression import positions

from freres_lmms.core import VideoTokens
from freres_lmms.presets import method_preset
from freres_lmms.tokens import drifting_features

ROOT = Path(__file__).resolve().parents[1]
# the paper's Table 5: (g, K, A) -> temporal-branch tokens; Table 3: Fre-Res visual tokens
PAPER_TABLE5 = {(2, 1, 8): 190, (2, 3, 8): 317, (4, 2, 8): 184, (2, 5, 8): 491, (2, 3, 6): 238, (2, 3, 10): 396}
PAPER_DENSE = 46_080


def clip(frames: int, dim: int = 64) -> VideoTokens:
    cpu = torch.device("cpu")
    return VideoTokens(drifting_features(frames, 24, 24, dim, cpu, torch.bfloat16, chunk=200).float(), positions(frames, 24, cpu))


def main() -> None:
    rows = []
    short = clip(16)
    for (g, k, a), paper in PAPER_TABLE5.items():
        method = method_preset(f"freres_table5_g{g}_k{k}_a{a}")
        method(short)
        counts = method.last_counts
        rows.append({"row": f"g={g} K={k} A={a}", "what": "temporal-branch tokens", "paper": paper,
                     "ours": counts["total"] - counts["anchors"], "K_used": counts["plan"]["coefficients"]})
    method = method_preset("freres_dense")
    method(clip(1800, dim=8))
    rows.append({"row": "dense (Table 3)", "what": "visual tokens", "paper": PAPER_DENSE, "ours": method.last_counts["total"],
                 "K_used": method.last_counts["plan"]["coefficients"]})
    out = ROOT / "results" / "freres_counts.json"
    out.write_text(json.dumps({"clip": "freres_lmms.tokens.drifting_features, 24x24, bf16 then CPU fp32", "rows": rows}, indent=1) + "\n")
    print("| preset | counts | paper's | ours | K used |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['what']} | {r['paper']:,} | {r['ours']:,} | {r['K_used']} |")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
