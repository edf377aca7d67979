# Masked-prediction metrics on the held-out split per cell type, beside four baselines.


rule evaluate:
    input:
        model=rules.train.output.model,
        history=rules.train.output.history,
        calibration=rules.calibrate.output[0],
        windows=lambda wildcards: prepared(
            evaluated(wildcards.group), [windows_file(config["evaluate"]["split"])]
        ),
        # the ridge baseline is fitted on each cell type's training windows
        training=lambda wildcards: prepared(evaluated(wildcards.group), [windows_file("train")]),
    output:
        metrics=RESULTS / "evaluate" / "{group}" / EVALUATE_FILES["metrics"],
        per_feature=RESULTS / "evaluate" / "{group}" / EVALUATE_FILES["per_feature"],
        plots=report(
            directory(RESULTS / "evaluate" / "{group}" / EVALUATE_FILES["plots"]),
            patterns=["{name}.png"],
            caption="../report/evaluate.rst",
            category="Evaluation",
            subcategory="{group}",
        ),
    log:
        RESULTS / "logs" / "evaluate" / "{group}.log",
    benchmark:
        RESULTS / "benchmarks" / "evaluate" / "{group}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        getdiff=GETDIFF,
        config=stage_config_json(
            config, "task", "diffusion", "train", "evaluate", "model.unseen_cell_types"
        ),
        prepared=RESULTS / "prepare",
        outdir=lambda wildcards, output: Path(output.metrics).parent,
    shell:
        "{params.getdiff} evaluate --config-json {params.config:q} --group {wildcards.group} --model {input.model} --calibration {input.calibration} --history {input.history} --prepared-dir {params.prepared} --outdir {params.outdir} --threads {threads} > {log} 2>&1"
