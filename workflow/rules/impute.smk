# Per-region imputations (normalised and raw units) for every region of the configured splits.


rule impute:
    input:
        model=rules.train.output.model,
        calibration=rules.calibrate.output[0],
        windows=lambda wildcards: prepared(
            [wildcards.cell_type], [windows_file(s) for s in config["impute"]["splits"]]
        ),
        missing=[config["impute"]["missing_regions"]] if config["impute"]["missing_regions"] else [],
    output:
        RESULTS / "impute" / "{group}" / imputation_file("{cell_type}"),
    log:
        RESULTS / "logs" / "impute" / "{group}" / "{cell_type}.log",
    benchmark:
        RESULTS / "benchmarks" / "impute" / "{group}" / "{cell_type}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        getdiff=GETDIFF,
        config=stage_config_json(
            config, "task", "prepare", "diffusion", "impute", "model.unseen_cell_types"
        ),
        prepared=RESULTS / "prepare",
    shell:
        "{params.getdiff} impute --config-json {params.config:q} --model {input.model} --calibration {input.calibration} --cell-type {wildcards.cell_type} --prepared-dir {params.prepared} --output {output} --threads {threads} > {log} 2>&1"
