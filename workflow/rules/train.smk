# LoRA fine-tuning of GETRegionDiffusion, one model per group of cell types (GPU when present).


rule train:
    input:
        windows=lambda wildcards: prepared(
            GROUPS[wildcards.group], [windows_file("train"), windows_file("validation")]
        ),
    output:
        model=RESULTS / "train" / "{group}" / "model.safetensors",
        adapter=directory(RESULTS / "train" / "{group}" / "adapter"),
        history=RESULTS / "train" / "{group}" / "history.tsv",
        config=RESULTS / "train" / "{group}" / "config.yaml",
    log:
        RESULTS / "logs" / "train" / "{group}.log",
    benchmark:
        RESULTS / "benchmarks" / "train" / "{group}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 8
    resources:
        gpu=1,
        gpu_model=config["train"]["gpu_model"] or "",
        mem_mb=32000,
        runtime=720,
    params:
        getdiff=GETDIFF,
        config=stage_config_json(config, "task", "model", "diffusion", "train"),
        prepared=RESULTS / "prepare",
        outdir=lambda wildcards, output: Path(output.model).parent,
    shell:
        "{params.getdiff} train --config-json {params.config:q} --group {wildcards.group} --prepared-dir {params.prepared} --outdir {params.outdir} --threads {threads} > {log} 2>&1"
