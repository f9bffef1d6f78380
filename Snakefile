# joulebench: what LLM inference costs in energy and time, and how system choices change it.
# The DAG, in order: model → precision variant → one benchmark per configuration, and one
# serving session per (model, precision, server) → tables → plots → findings report.


from snakemake.utils import min_version

min_version("9.20")


# The default study, unless one is given with --configfile: a given study replaces it whole
# (merged into it, a GPU study would inherit the CPU default's serving section).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/variants.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/serving.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
