# Stage 5: figures as altair specs over the summary table, as interactive HTML and PNG.


localrules:
    plot,


rule plot:
    input:
        "results/tables/summary.parquet",
    output:
        html=report(
            "results/plots/{figure}.html",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}", "format": "interactive"},
        ),
        png=report(
            "results/plots/{figure}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}", "format": "image"},
        ),
        svg="results/plots/{figure}.svg",
    log:
        "logs/plots/{figure}.log",
    params:
        stem=lambda wildcards, output: output.html.removesuffix(".html"),
        code=CODE["plot"],
    run:
        joulebench(
            "plot",
            log[0],
            wildcards.figure,
            summary=input[0],
            out_stem=params.stem,
        )
