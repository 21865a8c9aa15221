rule evaluate:
    """Top-1/top-5, params, mult-adds (SPEC §10) and LUT-predicted latency of a trained model; its measured latency
    comes from the table's `latency` job."""
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
    threads: 1
    resources:
        gpu=1 if P.evaluate.latency_device == "cuda" else 0,
        mem_mb=P.workflow.mem_mb,
        runtime=RUNTIME["evaluate"],
    conda:
        ENV
    shell:
        "{params.cli} evaluate --model {params.source} --name {wildcards.model} --checkpoint {input.best}"
        " --data {input.data}"
        " {params.lut_flag} --no-latency --out {output} > {log} 2>&1"


rule latency:
    """Measured end-to-end latency (SPEC §10.1) of every network of a table, timed in one job that reserves every
    core, so nothing runs beside the timing, in interleaved rounds, so the device's drift touches all rows alike."""
    input:
        table_net_configs,
    output:
        "results/latency/{space}.json",
    params:
        cli=CLI,
        evaluate=section("evaluate"),
        models=lambda w: table_models_of(w.space),  # a change of the table's models re-runs it
    wildcard_constraints:
        space="mbv2|resnet",
    log:
        "logs/latency/{space}.log",
    threads: LATENCY_THREADS
    resources:
        gpu=1 if P.evaluate.latency_device == "cuda" else 0,
        mem_mb=P.workflow.mem_mb,
        runtime=RUNTIME["evaluate"],
    conda:
        ENV
    shell:
        "{params.cli} latency --space {wildcards.space} --out {output} > {log} 2>&1"
