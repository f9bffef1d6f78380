# Stage 5: figures as altair specs over the summary table, as interactive HTML and PNG,
# and one power-over-time chart per run (its trace, phases shaded).


localrules:
    plot,
    plot_power,
    plot_serving,


rule plot:
    input:
        "results/tables/summary.parquet",
    output:
        **figure_outputs(
            "results/plots/{figure}",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
            image_in_report=True,
        ),
    log:
        "logs/plots/{figure}.log",
    params:
        stem=lambda wildcards, output: output.html.removesuffix(".html"),
        code=CODE["plot"],
    run:
        run_step(
            "plot",
            log[0],
            wildcards.figure,
            summary=input[0],
            out_stem=params.stem,
            formats=",".join(FIGURE_FORMATS),
        )


rule plot_power:
    input:
        record="results/records/{model}/{precision}/{engine}/{point}.json",
        trace="results/records/{model}/{precision}/{engine}/{point}.trace.parquet",
    output:
        **figure_outputs(
            "results/plots/power/{model}/{precision}/{engine}/{point}",
            caption="../report/power.rst",
            category="Power traces",
            labels={"configuration": "{model}/{precision}/{engine}/{point}"},
        ),
    log:
        "logs/plots/power/{model}/{precision}/{engine}/{point}.log",
    params:
        stem=lambda wildcards, output: output.html.removesuffix(".html"),
        code=CODE["plot"],
    run:
        run_step(
            "plot-power",
            log[0],
            input.record,
            trace=input.trace,
            out_stem=params.stem,
            formats=",".join(FIGURE_FORMATS),
        )


rule plot_serving:
    input:
        "results/tables/serving.parquet",
    output:
        **figure_outputs(
            "results/plots/{serving_figure}",
            caption="../report/serving.rst",
            category="Figures",
            labels={"figure": "{serving_figure}"},
            image_in_report=True,
        ),
    log:
        "logs/plots/{serving_figure}.log",
    params:
        stem=lambda wildcards, output: output.html.removesuffix(".html"),
        code=CODE["plot-serving"],
    run:
        run_step(
            "plot-serving",
            log[0],
            wildcards.serving_figure,
            table=input[0],
            out_stem=params.stem,
            formats=",".join(FIGURE_FORMATS),
        )
