# The resume state (checkpoint.pt) of the search and train rules is not a declared output: Snakemake deletes the
# outputs of a job before it runs it again, so a killed job would restart from zero (snakemake/snakemake#2407).
# The stages refuse a checkpoint of another model/space/variant and start over when only the params changed.
# `priority: 10`: the search chain is the critical path of a table run, so it starts first when cores are short.


rule search_warmup:
    """Weights-only warm-up (uniform single-op sampling), shared by every variant of a space; its checkpoint.pt
    (next to metrics.json) is where every variant starts."""
    input:
        PREPARED,
    output:
        metrics="results/search/{space}/warmup/metrics.json",
    params:
        cli=DIST_CLI,
        search=lambda w: P.raw["search"]["spaces"][w.space],
    priority: 10
    log:
        "logs/search/{space}/warmup.log",
    benchmark:
        "benchmarks/results/search/{space}/warmup.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPUS,
        cpus_per_task=JOB_THREADS,
        **DIST_RESOURCES,
        mem_mb=JOB_MEM_MB,
        runtime=RUNTIME["search_warmup"],
    conda:
        ENV
    shell:
        "{params.cli} search --space {wildcards.space} --warmup --out results/search/{wildcards.space}/warmup > {log} 2>&1"


rule search:
    """Architecture search of one variant (λ, τ, objective) from the shared warm-up checkpoint."""
    input:
        data=PREPARED,
        warmup="results/search/{space}/warmup/metrics.json",
        lut=search_lut,
    output:
        arch_params="results/search/{space}/{variant}/arch_params.json",
        history=report(
            "results/search/{space}/{variant}/history.csv",
            caption="../report/search_history.rst",
            category="Search",
        ),
        metrics="results/search/{space}/{variant}/metrics.json",
    params:
        cli=DIST_CLI,
        search=lambda w: P.raw["search"]["spaces"][w.space],
        quirks=section("quirks"),
        lut_source=P.lut.source,
        lut_flag=lut_flag,
    wildcard_constraints:
        variant=VARIANT,
    priority: 10
    log:
        "logs/search/{space}/{variant}.log",
    benchmark:
        "benchmarks/results/search/{space}/{variant}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPUS,
        cpus_per_task=JOB_THREADS,
        **DIST_RESOURCES,
        mem_mb=JOB_MEM_MB,
        runtime=RUNTIME["search"],
    conda:
        ENV
    shell:
        "{params.cli} search --space {wildcards.space} --variant {wildcards.variant}"
        " --warmup-from results/search/{wildcards.space}/warmup/checkpoint.pt"
        " {params.lut_flag} --out results/search/{wildcards.space}/{wildcards.variant} > {log} 2>&1"


rule derive:
    """Viterbi over β and argmax over α -> the stand-alone net_config (and the official string form)."""
    input:
        "results/search/{space}/{variant}/arch_params.json",
    output:
        "results/search/{space}/{variant}/net_config.json",
    wildcard_constraints:
        variant=VARIANT,
    params:
        cli=CLI,
        retrain_epoch=P.search.retrain_epoch,
    priority: 10
    log:
        "logs/derive/{space}/{variant}.log",
    conda:
        ENV
    shell:
        "{params.cli} derive --arch-params {input} --epoch {params.retrain_epoch} --out {output} > {log} 2>&1"


rule random_arch:
    """The paper's Random Search row: a random architecture of the space with the searched one's mult-adds."""
    input:
        lambda w: f"results/search/{w.space}/{P.report.random_search_variant}/net_config.json",
    output:
        "results/search/{space}/random/net_config.json",
    params:
        cli=CLI,
        tolerance=P.report.random_search_tolerance,
        seed=P.seed,
    priority: 10
    log:
        "logs/derive/{space}/random.log",
    conda:
        ENV
    shell:
        "{params.cli} random-arch --space {wildcards.space} --match {input} --tolerance {params.tolerance}"
        " --out {output} > {log} 2>&1"
