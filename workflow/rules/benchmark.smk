# Stage 3: one job per configuration (model × precision × engine × batch × input × output).
# Each job writes its record and its power trace (parquet) side by side.
# A job takes every core it is given, so concurrent jobs never disturb each other's numbers.
# Resources are cluster-neutral (GPU count, runtime, memory); partitions, accounts and the GPU
# spelling live in profiles/.


rule benchmark:
    input:
        model="results/models/{model}",
        variant="results/variants/{model}/{precision}.json",
    output:
        record="results/records/{model}/{precision}/{engine}/{point}.json",
        trace="results/records/{model}/{precision}/{engine}/{point}.trace.parquet",
    log:
        "logs/benchmark/{model}/{precision}/{engine}/{point}.log",
    benchmark:
        "results/benchmarks/benchmark/{model}/{precision}/{engine}/{point}.tsv"
    threads: bench_threads()
    resources:
        gpu=bench_gpus,
        runtime="30m",
        mem_mb=job_mem_mb,
    params:
        spec=bench_spec_json,
        code=CODE["bench"],
    run:
        run_step(
            "bench",
            log[0],
            model_dir=input.model,
            variant=input.variant,
            spec_json=params.spec,
            threads=threads,
            out=output.record,
            trace_out=output.trace,
            quiet=True,
            skip_unsupported=CONFIG["skip_unsupported"],
        )
