# Genome FASTA + motifs -> one motif scan of the union of every cell type's peaks (bgzip + tabix),
# when the config names genome_fasta and motifs instead of a precomputed motif_scan.
if config["genome_fasta"]:

    rule scan_motifs:
        input:
            peaks=sorted(set(CELL_TYPES["peaks"])),
            fasta=config["genome_fasta"],
            motifs=motif_file(),
        output:
            scan=RESULTS / SCAN_DIR / SCAN_FILES["scan"],
            index=RESULTS / SCAN_DIR / SCAN_FILES["index"],
            motifs=RESULTS / SCAN_DIR / SCAN_FILES["motifs"],
            names=RESULTS / SCAN_DIR / SCAN_FILES["names"],
        log:
            RESULTS / "logs" / "scan_motifs.log",
        benchmark:
            RESULTS / "benchmarks" / "scan_motifs.tsv"
        conda:
            "../../envs/getdiff.yaml"
        threads: config["scan"]["threads"]
        resources:
            mem_mb=4000,
            runtime=120,
        params:
            getdiff=GETDIFF,
            config=stage_config_json(config, "scan", "prepare.chromosomes", "prepare.chrom_naming"),
            outdir=lambda wildcards, output: Path(output.scan).parent,
        shell:
            "{params.getdiff} scan --config-json {params.config:q} --outdir {params.outdir} --threads {threads} > {log} 2>&1"
