# Stage 6: the findings report — each claim of the seed paper, tested on this study's data.


localrules:
    findings,


rule findings:
    input:
        unpack(findings_inputs),
    output:
        html=report(
            "results/report/findings.html",
            caption="../report/findings.rst",
            category="Findings",
        ),
        md="results/report/findings.md",
    log:
        "logs/report/findings.log",
    params:
        analysis=analysis_json(),
        code=CODE["findings"],
    run:
        run_step(
            "findings",
            log[0],
            summary=input.summary,
            measurements=input.measurements,
            analysis_json=params.analysis,
            audit=input.audit,
            **(
                {"serving": input.serving, "serving_dir": "results/serving"}
                if "serving" in input.keys()
                else {}
            ),
            out_md=output.md,
            out_html=output.html,
        )
