# Stage 5: figures as altair specs over the summary table, as interactive HTML and PNG,
# and one power-over-time chart per run (its trace, phases shaded). One rule per study-wide
# figure, so that each figure's report entry has its own caption (report/figures/<figure>.rst):
# the first rule draws energy_per_token_vs_batch, the others reuse it with their own outputs.
# Figure names come from joulebench.results.figures (test_report_captions checks they agree).


localrules:
    plot_energy_per_token_vs_batch,
    plot_phase_energy_per_request,
    plot_time_energy_pareto,
    plot_power,
    plot_serving_energy_latency,


rule plot_energy_per_token_vs_batch:
    input:
        "results/tables/summary.parquet",
    output:
        **figure_outputs(
            "results/plots/energy_per_token_vs_batch",
            caption="../report/figures/energy_per_token_vs_batch.rst",
            category="Figures",
            labels={"figure": "energy_per_token_vs_batch"},
            image_in_report=True,
        ),
    log:
        "logs/plots/energy_per_token_vs_batch.log",
    params:
        stem=lambda wildcards, output: output.html.removesuffix(".html"),
        code=CODE["plot"],
    run:
        run_step(
            "plot",
            log[0],
            os.path.basename(params.stem),  # the figure's name
            summary=input[0],
            out_stem=params.stem,
            formats=",".join(FIGURE_FORMATS),
        )


use rule plot_energy_per_token_vs_batch as plot_phase_energy_per_request with:
    output:
        **figure_outputs(
            "results/plots/phase_energy_per_request",
            caption="../report/figures/phase_energy_per_request.rst",
            category="Figures",
            labels={"figure": "phase_energy_per_request"},
            image_in_report=True,
        ),
    log:
        "logs/plots/phase_energy_per_request.log",


use rule plot_energy_per_token_vs_batch as plot_time_energy_pareto with:
    output:
        **figure_outputs(
            "results/plots/time_energy_pareto",
            caption="../report/figures/time_energy_pareto.rst",
            category="Figures",
            labels={"figure": "time_energy_pareto"},
            image_in_report=True,
        ),
    log:
        "logs/plots/time_energy_pareto.log",


rule plot_power:
    input:
        record="results/records/{model}/{precision}/{engine}/{point}.json",
        trace="results/records/{model}/{precision}/{engine}/{point}.trace.parquet",
    output:
        **figure_outputs(
            "results/plots/power/{model}/{precision}/{engine}/{point}",
            caption="../report/figures/power_over_time.rst",
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


rule plot_serving_energy_latency:
    input:
        "results/tables/serving.parquet",
    output:
        **figure_outputs(
            "results/plots/serving_energy_latency",
            caption="../report/figures/serving_energy_latency.rst",
            category="Figures",
            labels={"figure": "serving_energy_latency"},
            image_in_report=True,
        ),
    log:
        "logs/plots/serving_energy_latency.log",
    params:
        stem=lambda wildcards, output: output.html.removesuffix(".html"),
        code=CODE["plot-serving"],
    run:
        run_step(
            "plot-serving",
            log[0],
            os.path.basename(params.stem),  # the figure's name
            table=input[0],
            out_stem=params.stem,
            formats=",".join(FIGURE_FORMATS),
        )
