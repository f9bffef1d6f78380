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
    threads: workflow.cores
    params:
        spec=bench_spec_json,
    run:
        joulebench(
            "bench",
            log[0],
            model_dir=input.model,
            variant=input.variant,
            spec_json=params.spec,
            threads=threads,
            out=output[0],
            quiet=True,
        )
