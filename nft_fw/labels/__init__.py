"""Labels: a labelled chunk or image and the one way an item is labelled (label), the
label files nft-fw exports and reads (files), and an exported campaign's labels used by
another as if computed there (prior), and the names of a campaign's phases (phase)."""
