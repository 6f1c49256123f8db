"""Fre-Res Table 3 on a GPU: ``python scripts/profile_table3.py [Hydra overrides]`` (``make profile``).

    python scripts/profile_table3.py                                # every row, results/table3.{json,md,csv}
    python scripts/profile_table3.py rows=[freres] runs=1 out=results/table3-freres
    python scripts/profile_table3.py video.path=clip.mp4 pretrained=Qwen/Qwen3-VL-8B-Instruct

Config: freres_lmms/conf/profile.yaml; what each column means: freres_lmms/tables/profile.py.
"""

import sys

from freres_lmms.tables.profile import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
