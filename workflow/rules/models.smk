# Stage 1: a model directory per `models:` entry: downloaded at a pinned commit into the shared
# cache (results/models/<name> links to it), synthesized, or linked from a local path.


# Downloads run where Snakemake runs (the login node on a cluster): compute nodes often have no
# internet, and every later job reads the cache offline (HF_HUB_OFFLINE=1).
localrules:
    download_model,


rule download_model:
    output:
        directory("results/models/{model}"),
    log:
        "logs/models/{model}.log",
    wildcard_constraints:
        model=model_names("hub"),
    params:
        spec=model_spec_json,
        key=model_config_key,
        code=CODE["prepare-model"],
    run:
        run_step(
            "prepare-model",
            log[0],
            spec_json=params.spec,
            config_key=params.key,
            out=output[0],
            cache_dir=CACHE_DIR,
        )


rule prepare_model:
    output:
        directory("results/models/{model}"),
    log:
        "logs/models/{model}.log",
    benchmark:
        "results/benchmarks/models/{model}.tsv"
    wildcard_constraints:
        model=model_names("hub", matching=False),
    threads: 1
    resources:
        runtime="30m",
        mem_mb=job_mem_mb,
    params:
        spec=model_spec_json,
        key=model_config_key,
        code=CODE["prepare-model"],
    run:
        run_step(
            "prepare-model",
            log[0],
            spec_json=params.spec,
            config_key=params.key,
            out=output[0],
            cache_dir=CACHE_DIR,
        )
