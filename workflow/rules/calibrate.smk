# Predictive intervals of each model group, calibrated on the validation chromosomes.


rule calibrate:
    input:
        model=rules.train.output.model,
        windows=lambda wildcards: prepared(
            calibrated(wildcards.group), [windows_file("validation")]
        ),
        # the ridge baseline is fitted on each cell type's training windows
        training=lambda wildcards: prepared(calibrated(wildcards.group), [windows_file("train")]),
    output:
        RESULTS / "calibrate" / "{group}" / CALIBRATION_FILE,
    log:
        RESULTS / "logs" / "calibrate" / "{group}.log",
    benchmark:
        RESULTS / "benchmarks" / "calibrate" / "{group}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        getdiff=GETDIFF,
        config=stage_config_json(
            config,
            "task",
            "diffusion",
            "train",
            "evaluate",
            "calibrate",
            "impute.interval_level",
            "model.unseen_cell_types",
        ),
        prepared=RESULTS / "prepare",
    shell:
        "{params.getdiff} calibrate --config-json {params.config:q} --group {wildcards.group} --model {input.model} --prepared-dir {params.prepared} --output {output} --threads {threads} > {log} 2>&1"
