rule prepare:
    """ImageNet (tree or official tars) or the embedded Fashion-MNIST -> search/train/val splits + manifest."""
    output:
        directory(PREPARED),
    params:
        cli=CLI,
        data=section("data"),
    log:
        "logs/prepare.log",
    benchmark:
        "benchmarks/results/prepare.tsv"
    threads: max(1, P.data.workers)
    resources:
        mem_mb=P.workflow.mem_mb,
        runtime=RUNTIME["prepare"],
    conda:
        ENV
    shell:
        "{params.cli} prepare --out {output} > {log} 2>&1"
