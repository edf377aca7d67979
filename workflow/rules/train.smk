# LoRA fine-tuning of GETRegionDiffusion, one model per group of cell types (GPU when present).
# train.devices x train.nodes > 1: torchrun starts one process per GPU (getdiff.training.launch).
from getdiff.training.launch import launcher, train_resources


rule train:
    input:
        windows=lambda wildcards: prepared(
            GROUPS[wildcards.group], [windows_file("train"), windows_file("validation")]
        ),
    output:
        model=RESULTS / "train" / "{group}" / TRAIN_FILES["model"],
        adapter=directory(RESULTS / "train" / "{group}" / TRAIN_FILES["adapter"]),
        history=RESULTS / "train" / "{group}" / TRAIN_FILES["history"],
        config=RESULTS / "train" / "{group}" / TRAIN_FILES["config"],
    log:
        RESULTS / "logs" / "train" / "{group}.log",
    benchmark:
        RESULTS / "benchmarks" / "train" / "{group}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 8
    resources:
        **train_resources(config["train"]),
        mem_mb=32000,
        runtime=720,
    params:
        launch=launcher(config["train"]["devices"], config["train"]["nodes"]),
        getdiff=GETDIFF,
        config=stage_config_json(config, "task", "model", "diffusion", "train"),
        prepared=RESULTS / "prepare",
        outdir=lambda wildcards, output: Path(output.model).parent,
    shell:
        "{params.launch} {params.getdiff} train --config-json {params.config:q} --group {wildcards.group} --prepared-dir {params.prepared} --outdir {params.outdir} --threads {threads} > {log} 2>&1"
