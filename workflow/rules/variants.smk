# Stage 2: one manifest per (model, precision) saying how to load the variant and what it weighs.
# Formats that need a converted checkpoint write it here, once, for every benchmark to reuse.


localrules:
    describe_variant,


rule describe_variant:
    input:
        model="results/models/{model}",
    output:
        "results/variants/{model}/{precision}.json",
    log:
        "logs/variants/{model}/{precision}.log",
    params:
        quantization=quantization_json(),
        code=CODE["variant"],
    run:
        joulebench(
            "variant",
            log[0],
            model_dir=input.model,
            precision=wildcards.precision,
            quantization_json=params.quantization,
            out=output[0],
        )
