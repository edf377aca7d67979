# Where biologists look at the imputations: bigWig tracks (genome browsers), AnnData (scverse),
# and the report's locus view.


rule tracks:
    input:
        rules.impute.output[0],
    output:
        track_outputs("{group}", "{cell_type}"),
    log:
        RESULTS / "logs" / "tracks" / "{group}" / "{cell_type}.log",
    benchmark:
        RESULTS / "benchmarks" / "tracks" / "{group}" / "{cell_type}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 1
    params:
        getdiff=GETDIFF,
        prefix=lambda wildcards: RESULTS / "tracks" / wildcards.group / wildcards.cell_type,
        fasta=f"--genome-fasta {config['genome_fasta']}" if config["genome_fasta"] else "",
        bedgraph="--bedgraph" if config["tracks"]["bedgraph"] else "",
    shell:
        "{params.getdiff} tracks --imputation {input} --prefix {params.prefix} {params.fasta} {params.bedgraph} --label {wildcards.cell_type} > {log} 2>&1"


rule anndata:
    input:
        imputation=rules.impute.output[0],
        regions=RESULTS / "prepare" / "{cell_type}" / REGIONS_FILE,
    output:
        RESULTS / "impute" / "{group}" / anndata_file("{cell_type}"),
    log:
        RESULTS / "logs" / "anndata" / "{group}" / "{cell_type}.log",
    benchmark:
        RESULTS / "benchmarks" / "anndata" / "{group}" / "{cell_type}.tsv"
    conda:
        "../../envs/getdiff.yaml"
    threads: 1
    params:
        getdiff=GETDIFF,
        config=stage_config_json(config, *HASHED_SECTIONS),
    shell:
        "{params.getdiff} export-h5ad --config-json {params.config:q} --imputation {input.imputation} --regions {input.regions} --output {output} > {log} 2>&1"


rule locus_view:
    input:
        imputation=lambda wildcards: [
            RESULTS / "impute" / wildcards.group / imputation_file(ct)
            for ct in IMPUTED[wildcards.group]
        ],
        # motif labels over the peaks where the model group is interpreted (accessibility task)
        effects=lambda wildcards: (
            [RESULTS / "interpret" / wildcards.group / INTERPRET_FILES["effects"]]
            if interpreted()
            else []
        ),
    output:
        report(
            directory(RESULTS / "tracks" / "{group}" / "loci"),
            patterns=["{name}.png"],
            caption="../report/locus.rst",
            category="Locus view",
            subcategory="{group}",
        ),
    log:
        RESULTS / "logs" / "locus_view" / "{group}.log",
    conda:
        "../../envs/getdiff.yaml"
    threads: 1
    params:
        getdiff=GETDIFF,
        chromosome=locus_chromosome(),
        regions=" ".join(f"--region {locus}" for locus in config["report"]["loci"]),
        effects=lambda wildcards, input: (
            f"--motif-effects {input.effects}" if input.effects else ""
        ),
    shell:
        "{params.getdiff} plot-locus --imputation {input.imputation} {params.effects} --default-chromosome {params.chromosome} {params.regions} --outdir {output} > {log} 2>&1"
