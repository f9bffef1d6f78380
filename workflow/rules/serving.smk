# Stage 3b: one serving session per (model, precision, server): start the server, run every
# arrival pattern × rate on it (one meter window per load phase), stop it. Per experiment: the
# record, the request table and the meter's power trace; the server log beside them.
# Resources as for benchmarks (the server holds the GPU for the whole session). Then one
# power-over-time figure per experiment, with the requests in flight under it.


localrules:
    plot_serving_power,


rule serve:
    input:
        model="results/models/{model}",
    output:
        records=serving_outputs("json"),
        tables=serving_outputs("parquet"),
        traces=serving_outputs("trace.parquet"),
        server_log="results/serving/{model}/{precision}/{server}/server.log",
    log:
        "logs/serving/{model}/{precision}/{server}.log",
    benchmark:
        "results/benchmarks/serving/{model}/{precision}/{server}.tsv"
    threads: bench_threads()
    resources:
        gpu=SERVING_GPUS,
        runtime="60m",
        mem_mb=job_mem_mb,
    params:
        spec=serving_spec_json,
        code=CODE["serve"],
        out_dir=lambda wildcards, output: os.path.dirname(output.server_log),
    run:
        run_step(
            "serve",
            log[0],
            model_dir=input.model,
            spec_json=params.spec,
            out_dir=params.out_dir,
            server_log=output.server_log,
        )


rule plot_serving_power:
    input:
        record="results/serving/{model}/{precision}/{server}/{experiment}.json",
        table="results/serving/{model}/{precision}/{server}/{experiment}.parquet",
        trace="results/serving/{model}/{precision}/{server}/{experiment}.trace.parquet",
    output:
        **figure_outputs(
            "results/plots/serving_power/{model}/{precision}/{server}/{experiment}",
            caption="../report/figures/serving_power_over_time.rst",
            category="Power traces",
            labels={"experiment": "{model}/{precision}/{server}/{experiment}"},
        ),
    log:
        "logs/plots/serving_power/{model}/{precision}/{server}/{experiment}.log",
    params:
        stem=lambda wildcards, output: output.html.removesuffix(".html"),
        code=CODE["plot-serving"],
    run:
        run_step(
            "plot-serving-power",
            log[0],
            input.record,
            trace=input.trace,
            table=input.table,
            out_stem=params.stem,
            formats=",".join(FIGURE_FORMATS),
        )
