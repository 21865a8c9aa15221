rule evaluate:
    """Top-1/top-5, params, mult-adds, measured latency (SPEC §10) and LUT-predicted latency of a trained model."""
    input:
        best="results/train/{model}/best.pt",
        data=PREPARED,
        lut=eval_lut,
    output:
        "results/eval/{model}/metrics.json",
    params:
        cli=CLI,
        evaluate=section("evaluate"),
        source=lambda w: model_source(w.model),
        lut_flag=lambda w, input: f"--lut {input.lut}" if input.lut else "",
    log:
        "logs/evaluate/{model}.log",
    threads: LATENCY_THREADS
    resources:
        gpu=1 if P.evaluate.latency_device == "cuda" else 0,
        mem_mb=P.workflow.mem_mb,
        runtime=RUNTIME["evaluate"],
    conda:
        ENV
    shell:
        "{params.cli} evaluate --model {params.source} --name {wildcards.model} --checkpoint {input.best}"
        " --data {input.data}"
        " {params.lut_flag} --out {output} > {log} 2>&1"
