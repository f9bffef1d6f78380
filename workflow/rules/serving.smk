# Stage 3b: one serving session per (model, precision, server): start the server, run every
# arrival pattern × rate on it (one meter window per load phase), stop it. Server log beside.
# Resources as for benchmarks (the server holds the GPU for the whole session).


rule serve:
    input:
        model="results/models/{model}",
    output:
        records=serving_outputs("json"),
        tables=serving_outputs("parquet"),
        server_log="results/serving/{model}/{precision}/{server}/server.log",
    log:
        "logs/serving/{model}/{precision}/{server}.log",
    benchmark:
        "results/benchmarks/serving/{model}/{precision}/{server}.tsv"
    threads: bench_threads()
    resources:
        gpu=BENCH_GPUS,
        runtime="60m",
        mem_mb=job_mem_mb,
    params:
        spec=serving_spec_json,
        code=CODE["serve"],
        out_dir=lambda wildcards, output: os.path.dirname(output.server_log),
    run:
        joulebench(
            "serve",
            log[0],
            model_dir=input.model,
            spec_json=params.spec,
            out_dir=params.out_dir,
            server_log=output.server_log,
        )
