# DenseNAS reproduction workflow: prepare -> lut -> warm-up -> search per variant -> derive -> train -> evaluate (and
# one latency job per table) -> report. Every rule calls one `densenas <stage>` command (the same commands as dvc.yaml).
#   snakemake --cores 8 reports/table_mbv2.csv        # the MobileNetV2-space table
#   snakemake --cores 8 --config preset=paper all     # the paper's settings (ImageNet, GPUs)
from snakemake.utils import min_version

min_version("9.0")


# Read for Snakemake's own use (`--config` merges over it); common.smk resolves and validates the params with
# the preset and the command-line values, as the CLI does.
configfile: "params.yaml"


envvars:
    "PATH",


include: "workflow/rules/common.smk"


# Seconds of work each, from files already there: on a cluster they run in the Snakemake process, not as jobs.
localrules:
    all,
    derive,
    random_arch,
    table_mbv2,
    table_resnet,
    figures,


include: "workflow/rules/prepare.smk"
include: "workflow/rules/lut.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "reports/table_mbv2.csv",
        "reports/table_resnet.csv",
        "reports/table_latency.csv",
        "reports/figures/accuracy_vs_latency.png",
        "reports/figures/beta_evolution.png",
        "reports/figures/training_curves.png",
    default_target: True
