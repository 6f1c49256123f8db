"""Regenerate a paper table: ``python scripts/reproduce_table.py table=<id> [overrides] [--force]``.

    python scripts/reproduce_table.py table=2                                   # Fre-Res Table 2, real weights/data
    python scripts/reproduce_table.py table=2 model=tiny benchmark=synthetic    # the same rows on CPU, end to end
    python scripts/reproduce_table.py table=flops                               # equation S3 for every preset

Table ids (or aliases): freres_t1..t6 (1..6), freres_fig3 (fig3), adaretake_t1..t4 (ada1..ada4),
supp_s1..s8 (s1..s8), flops. See freres_lmms/tables/reproduce.py and docs/tables.md.
"""

import sys

from freres_lmms.tables.reproduce import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
