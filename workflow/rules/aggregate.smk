# Stage 4: every record → one tidy measurements table → a summary with confidence intervals.


localrules:
    aggregate,
    aggregate_serving,


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


rule aggregate_serving:
    input:
        records=all_serving_records(),
    output:
        table="results/tables/serving.parquet",
        table_csv=report(
            "results/tables/serving.csv",
            caption="../report/serving.rst",
            category="Tables",
        ),
    log:
        "logs/aggregate_serving.log",
    params:
        code=CODE["aggregate-serving"],
    run:
        joulebench(
            "aggregate-serving",
            log[0],
            *input.records,
            table=output.table,
            table_csv=output.table_csv,
        )
