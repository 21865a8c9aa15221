rule table_mbv2:
    """The paper's Table 1 beside what this run measured (published, baselines, searched, random search)."""
    input:
        eval_metrics(mbv2_models()),
        search_metrics("mbv2"),
        "results/latency/mbv2.json",
    output:
        report("reports/table_mbv2.csv", caption="../report/table_mbv2.rst", category="Tables"),
    params:
        cli=CLI,
        report=section("report"),
        retrain_epoch=P.search.retrain_epoch,
        variants=P.raw["search"]["spaces"]["mbv2"]["variants"],
    log:
        "logs/report/table_mbv2.log",
    conda:
        ENV
    shell:
        "{params.cli} report table --space mbv2 --out {output} > {log} 2>&1"


rule table_resnet:
    """The paper's ResNet table beside this run's R1/R2 variants and ResNet-18/34/50."""
    input:
        eval_metrics(resnet_models()),
        search_metrics("resnet"),
        "results/latency/resnet.json",
    output:
        report("reports/table_resnet.csv", caption="../report/table_resnet.rst", category="Tables"),
    params:
        cli=CLI,
        report=section("report"),
        retrain_epoch=P.search.retrain_epoch,
        variants=P.raw["search"]["spaces"]["resnet"]["variants"],
    log:
        "logs/report/table_resnet.log",
    conda:
        ENV
    shell:
        "{params.cli} report table --space resnet --out {output} > {log} 2>&1"


rule figures:
    """Accuracy vs latency (paper points and ours), β evolution during search, training curves."""
    input:
        eval_metrics(mbv2_models()),
        "results/latency/mbv2.json",
        f"results/search/mbv2/{P.report.random_search_variant}/arch_params.json",
    output:
        report("reports/figures/accuracy_vs_latency.png", caption="../report/accuracy_vs_latency.rst",
               category="Figures"),
        report("reports/figures/beta_evolution.png", caption="../report/beta_evolution.rst", category="Figures"),
        report("reports/figures/training_curves.png", caption="../report/training_curves.rst", category="Figures"),
    params:
        cli=CLI,
        report=section("report"),
    log:
        "logs/report/figures.log",
    conda:
        ENV
    shell:
        "{params.cli} report figures --space mbv2 --out reports/figures > {log} 2>&1"


rule table_latency:
    """Predicted (this device's per-op LUT) vs measured end-to-end latency of random MBV2 archs and DenseNAS-A/B/C."""
    output:
        report("reports/table_latency.csv", caption="../report/table_latency.rst", category="Tables"),
    params:
        flags=PARAMS_FLAGS,  # the preset's LUT device and batch (paper: cuda, 32) and any --config value
        lut=section("lut"),
        input_size=P.data.input_size,
        archs=P.report.latency_table_archs,
    log:
        "logs/report/table_latency.log",
    threads: LATENCY_THREADS
    resources:
        gpu=1 if P.lut.device == "cuda" else 0,
        mem_mb=P.workflow.mem_mb,
        runtime=RUNTIME["lut"],
    conda:
        ENV
    shell:
        "python benchmarks/latency_prediction.py {params.flags} --input-size {params.input_size}"
        " --archs {params.archs} --out {output} > {log} 2>&1"
