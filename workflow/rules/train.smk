rule train:
    """Retraining with the paper's recipe (searched, published and baseline models alike)."""
    input:
        model_inputs,
    output:
        best="results/train/{model}/best.pt",
        checkpoint="results/train/{model}/checkpoint.pt",
        history=report(
            "results/train/{model}/history.csv",
            caption="../report/train_history.rst",
            category="Training",
        ),
        metrics="results/train/{model}/metrics.json",
    params:
        train=section("train"),
        source=lambda w: model_source(w.model),
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/results/train/{model}.tsv"
    threads: 2
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=2880,
    shell:
        "{DIST_CLI} train --model {params.source} --name {wildcards.model} --data {PREPARED}"
        " --out results/train/{wildcards.model} > {log} 2>&1"
