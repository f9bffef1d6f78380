# Stage 2: one manifest per (model, precision) saying how to load the variant and what it weighs.
# On-load variants (casts, bitsandbytes, fp8, prequantized) are described; the ct-* variants are
# compressed-tensors checkpoints, written once into the shared cache (for every benchmark and
# every study that asks for the same model, variant and settings) and linked here.


localrules:
    describe_variant,


rule describe_variant:
    input:
        model="results/models/{model}",
    output:
        "results/variants/{model}/{precision}.json",
    log:
        "logs/variants/{model}/{precision}.log",
    wildcard_constraints:
        precision=ON_LOAD_PRECISIONS,
    params:
        quantization=quantization_json(),
        code=CODE["variant"],
    run:
        run_step(
            "variant",
            log[0],
            model_dir=input.model,
            precision=wildcards.precision,
            quantization_json=params.quantization,
            out=output[0],
        )


rule quantize_variant:
    input:
        model="results/models/{model}",
    output:
        manifest="results/variants/{model}/{precision}.json",
        checkpoint=directory("results/variants/{model}/{precision}.ckpt"),
    log:
        "logs/variants/{model}/{precision}.log",
    benchmark:
        "results/benchmarks/variants/{model}/{precision}.tsv"
    wildcard_constraints:
        precision=CHECKPOINT_PRECISIONS,
    threads: 4
    resources:
        runtime="60m",
        mem_mb=job_mem_mb,
    params:
        quantization=quantization_json(),
        code=CODE["quantize"],
    run:
        run_step(
            "quantize",
            log[0],
            model_dir=input.model,
            precision=wildcards.precision,
            quantization_json=params.quantization,
            threads=threads,
            out_dir=output.checkpoint,
            manifest=output.manifest,
            cache_dir=CACHE_DIR,
        )
