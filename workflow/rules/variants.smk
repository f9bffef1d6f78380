# Stage 2: one manifest per (model, precision) saying how to load the variant and what it weighs.
# Formats that need a converted checkpoint write it here, once, for every benchmark to reuse.


localrules:
    describe_variant,


rule describe_variant:
    input:
        model="results/models/{model}",
    output:
        "results/variants/{model}/{precision}.json",
    log:
        "logs/variants/{model}/{precision}.log",
    shell:
        "joulebench variant --model-dir {input.model:q} --precision {wildcards.precision:q}"
        " --out {output:q} > {log:q} 2>&1"
