# Motif knock-outs of an accessibility model: cis and context effects per cell type and motif.


rule interpret:
    input:
        model=rules.train.output.model,
        # the interpreted split, and the training split the ridge baseline is fitted on
        windows=lambda wildcards: prepared(
            GROUPS[wildcards.group],
            list(
                dict.fromkeys([windows_file(config["interpret"]["split"]), windows_file("train")])
            ),
        ),
    output:
        effects=RESULTS / "interpret" / "{group}" / INTERPRET_FILES["effects"],
        by_distance=RESULTS / "interpret" / "{group}" / INTERPRET_FILES["distance"],
        plots=report(
            directory(RESULTS / "interpret" / "{group}" / INTERPRET_FILES["plots"]),
            patterns=["{name}.png"],
            caption="../report/interpret.rst",
            category="Interpretation",
            subcategory="{group}",
        ),
    log:
        RESULTS / "logs" / "interpret" / "{group}.log",
    benchmark:
        RESULTS / "benchmarks" / "interpret" / "{group}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        getdiff=GETDIFF,
        config=stage_config_json(
            config,
            "task",
            "diffusion",
            "train",
            "evaluate",
            "interpret",
            "model.unseen_cell_types",
        ),
        prepared=RESULTS / "prepare",
        outdir=lambda wildcards, output: Path(output.effects).parent,
    shell:
        "{params.getdiff} interpret --config-json {params.config:q} --group {wildcards.group} --model {input.model} --prepared-dir {params.prepared} --outdir {params.outdir} --threads {threads} > {log} 2>&1"
