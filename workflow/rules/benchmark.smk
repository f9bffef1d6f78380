# Stage 3: one job per configuration (model × precision × engine × batch × input × output).
# A job takes every core it is given, so concurrent jobs never disturb each other's numbers.


rule benchmark:
    input:
        model="results/models/{model}",
        variant="results/variants/{model}/{precision}.json",
    output:
        "results/records/{model}/{precision}/{engine}/{point}.json",
    log:
        "logs/benchmark/{model}/{precision}/{engine}/{point}.log",
    benchmark:
        "results/benchmarks/benchmark/{model}/{precision}/{engine}/{point}.tsv"
    params:
        spec=bench_spec_json,
    threads: workflow.cores
    shell:
        "joulebench bench --quiet --model-dir {input.model:q} --variant {input.variant:q}"
        " --spec-json {params.spec:q} --threads {threads} --out {output:q} > {log:q} 2>&1"
