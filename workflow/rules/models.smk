# Stage 1: a model directory per `models:` entry (synthesized, downloaded at a pinned revision,
# or linked from a local path).


rule prepare_model:
    output:
        directory("results/models/{model}"),
    log:
        "logs/models/{model}.log",
    benchmark:
        "results/benchmarks/models/{model}.tsv"
    threads: 1
    resources:
        runtime="30m",
        mem_mb=job_mem_mb,
    params:
        spec=model_spec_json,
        key=model_config_key,
        code=CODE["prepare-model"],
    run:
        joulebench(
            "prepare-model",
            log[0],
            spec_json=params.spec,
            config_key=params.key,
            out=output[0],
        )
