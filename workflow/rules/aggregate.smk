# Stage 4: every record → one tidy measurements table → a summary with confidence intervals.


localrules:
    aggregate,


rule aggregate:
    input:
        records=all_records(),
    output:
        measurements="results/tables/measurements.parquet",
        long="results/tables/measurements_long.parquet",
        summary="results/tables/summary.parquet",
        summary_csv=report(
            "results/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
    log:
        "logs/aggregate.log",
    params:
        analysis=analysis_json(),
        code=CODE["aggregate"],
    run:
        joulebench(
            "aggregate",
            log[0],
            *input.records,
            analysis_json=params.analysis,
            measurements=output.measurements,
            long=output.long,
            summary=output.summary,
            summary_csv=output.summary_csv,
        )
