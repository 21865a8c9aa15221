rule train:
    """Retraining with the paper's recipe (searched, published and baseline models alike)."""
    input:
        data=PREPARED,
        net_config=model_net_config,
    output:
        best="results/train/{model}/best.pt",
        history=report(
            "results/train/{model}/history.csv",
            caption="../report/train_history.rst",
            category="Training",
        ),
        metrics="results/train/{model}/metrics.json",
    params:
        cli=DIST_CLI,
        train=section("train"),
        source=lambda w: model_source(w.model),
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/results/train/{model}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPUS,
        cpus_per_task=JOB_THREADS,
        **DIST_RESOURCES,
        mem_mb=JOB_MEM_MB,
        runtime=RUNTIME["train"],
    conda:
        ENV
    shell:
        "{params.cli} train --model {params.source} --name {wildcards.model} --data {input.data}"
        " --out results/train/{wildcards.model} > {log} 2>&1"
