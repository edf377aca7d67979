# getdiff: peaks + motif scans -> 900 x 283 region tensors -> LoRA fine-tuned GETRegionDiffusion
# -> masked-prediction metrics and per-region imputations. Logic lives in the getdiff package;
# rules only call its CLI. See README.md and config/README.md.

import re

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    cell_type="|".join(map(re.escape, CELL_TYPES.index)),
    group="|".join(map(re.escape, GROUPS)),
    split="|".join(SPLITS),


include: "workflow/rules/demo.smk"
include: "workflow/rules/scan.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/impute.smk"
include: "workflow/rules/tracks.smk"
include: "workflow/rules/interpret.smk"


rule all:
    default_target: True
    input:
        all_targets(),


onstart:
    check_slurm_requests()


onerror:
    explain_slurm_failures(log)
