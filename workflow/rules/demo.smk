# Bundled demo inputs, generated deterministically (getdiff demo-data) when demo.enabled is true.
if config["demo"]["enabled"]:

    rule demo_data:
        output:
            peaks=expand(
                "{outdir}/peaks/{cell_type}.narrowPeak.gz",
                outdir=config["demo"]["outdir"],
                cell_type=DEMO_CELL_TYPES,
            ),
            motif_scan=f"{config['demo']['outdir']}/motif_scan.bed.gz",
            genome=multiext(f"{config['demo']['outdir']}/genome.fa.gz", "", ".fai", ".gzi"),
            motifs=f"{config['demo']['outdir']}/motifs.meme",
            planted_effects=f"{config['demo']['outdir']}/planted_effects.tsv",
            fragments=demo_fragments_outputs(),
        log:
            RESULTS / "logs" / "demo_data.log",
        benchmark:
            RESULTS / "benchmarks" / "demo_data.tsv"
        conda:
            "../../envs/getdiff.yaml"
        threads: 1
        params:
            getdiff=GETDIFF,
            outdir=lambda wildcards, output: Path(output.motif_scan).parent,
            peaks=config["demo"]["peaks_per_cell_type"],
            chromosomes=demo_chromosomes_arg(),
            seed=config["demo"]["seed"],
            fragments=demo_fragments_arg(),
        shell:
            "{params.getdiff} demo-data --out {params.outdir} --peaks-per-cell-type {params.peaks} {params.chromosomes} --seed {params.seed} {params.fragments} > {log} 2>&1"
