# Peaks + motif scan -> per-cell-type region table and window tensors (prepare.window_size
# regions each) per split.


rule prepare:
    input:
        **motif_inputs(),
        peaks=peaks_of,
        counts=counts_of,
    output:
        regions=RESULTS / "prepare" / "{cell_type}" / REGIONS_FILE,
        windows=[RESULTS / "prepare" / "{cell_type}" / windows_file(s) for s in SPLITS],
        manifest=RESULTS / "prepare" / "{cell_type}" / MANIFEST_FILE,
    log:
        RESULTS / "logs" / "prepare" / "{cell_type}.log",
    benchmark:
        RESULTS / "benchmarks" / "prepare" / "{cell_type}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        getdiff=GETDIFF,
        config=stage_config_json(config, "prepare"),
        outdir=lambda wildcards, output: Path(output.regions).parent,
    shell:
        "{params.getdiff} prepare --config-json {params.config:q} --cell-type {wildcards.cell_type} --outdir {params.outdir} --threads {threads} > {log} 2>&1"
