# Stage 1: a model directory per `models:` entry (synthesized, downloaded at a pinned revision,
# or linked from a local path).


rule prepare_model:
    output:
        directory("results/models/{model}"),
    log:
        "logs/models/{model}.log",
    benchmark:
        "results/benchmarks/models/{model}.tsv"
    params:
        spec=model_spec_json,
    threads: 1
    shell:
        "joulebench prepare-model --spec-json {params.spec:q} --out {output:q} > {log:q} 2>&1"
