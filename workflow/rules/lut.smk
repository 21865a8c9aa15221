rule lut:
    """Per-op latency lookup table of a search space, profiled on this device (each op signature once)."""
    output:
        "results/luts/{space}/{tag}.json",
    params:
        cli=CLI,
        lut=section("lut"),
        input_size=P.data.input_size,
        seed=P.seed,  # draws the calibration networks
    log:
        "logs/lut/{space}/{tag}.log",
    benchmark:
        "benchmarks/results/lut/{space}/{tag}.tsv"
    threads: P.lut.threads
    resources:
        gpu=1 if P.lut.device == "cuda" else 0,
        mem_mb=P.workflow.mem_mb,
        runtime=RUNTIME["lut"],
    conda:
        ENV
    shell:
        "{params.cli} lut --space {wildcards.space} --out {output} > {log} 2>&1"
