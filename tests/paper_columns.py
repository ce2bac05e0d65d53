"""The paper's Table 3 and Table 4 columns spelled as pixel-deflection configs, the way the code
before the defence registry (b2d6819) spelled them: the oracle that the registry's entries
(``TABLE3_COLUMNS`` / ``TABLE4_COLUMNS`` in ``pd_core/defences/registry.py``) must reproduce bit for bit.
Kept in the tests so that the library has one table of defences, the registry."""
from dataclasses import replace

from pd_core.defence import PAPER_DEFAULTS, DefenceConfig

# Table 3 ablation: name -> stages. Table 4: thresholding after deflection.
TABLE3_DEFENCES: dict[str, DefenceConfig] = {
    "jpeg": replace(PAPER_DEFAULTS, deflect=False, denoise=False, jpeg_quality=75),
    "wd": replace(PAPER_DEFAULTS, deflect=False),
    "pd": replace(PAPER_DEFAULTS, denoise=False),
    "pd+jpeg": replace(PAPER_DEFAULTS, denoise=False, jpeg_quality=75),
    "wd+pd+jpeg": replace(PAPER_DEFAULTS, jpeg_quality=75),
    "wd+pd": PAPER_DEFAULTS,
}
TABLE4_DEFENCES: dict[str, DefenceConfig] = {
    "hard": replace(PAPER_DEFAULTS, mode="hard"),
    "visu": replace(PAPER_DEFAULTS, method="visu"),
    "sure": replace(PAPER_DEFAULTS, method="sure"),
    "bayes": PAPER_DEFAULTS,
}
