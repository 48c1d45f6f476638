"""Runners: the campaign in one process (local), its training replayed on stored labels
(replay), and what the phases made written to files (products). The service runs the same
steps as Fireworks (nft_fw.firetasks)."""
