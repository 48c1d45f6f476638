"""Steps: each phase of a campaign as one function from inputs to outcome — an NFT
iteration, a relax round, a transfer, an MD segment (step) — with the rules they share:
when to go on (decision), which atoms to chunk (selection), which model is kept (kept), the
ML relaxation and MD drivers (relax, md), and the nearsightedness analysis of a parent."""
