# Stage 4: every record → one tidy measurements table → a summary with confidence intervals;
# and every record → one provenance audit (can the rows be compared at all?).


localrules:
    aggregate,
    aggregate_serving,
    provenance_audit,


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
        run_step(
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
        run_step(
            "aggregate-serving",
            log[0],
            *input.records,
            table=output.table,
            table_csv=output.table_csv,
        )


rule provenance_audit:
    input:
        records=all_records(),
        serving=all_serving_records(),
    output:
        csv=report(
            "results/tables/provenance.csv",
            caption="../report/provenance.rst",
            category="Tables",
        ),
        json="results/tables/provenance.json",
    log:
        "logs/provenance.log",
    params:
        checkout=CODE["bench"],
        code=CODE["audit"],
    run:
        run_step(
            "provenance",
            log[0],
            *input.records,
            *input.serving,
            code_hash=params.checkout,
            out_csv=output.csv,
            out_json=output.json,
        )
