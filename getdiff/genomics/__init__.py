"""Genomic inputs: peaks and intervals, counts from BAM/CRAM and fragments, FASTA and motif
files, the motif scan, and per-peak motif scores. Knows nothing of windows or the model."""
