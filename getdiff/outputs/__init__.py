"""Results in the formats biologists open: bigWig/bedGraph tracks, AnnData, the locus view."""
