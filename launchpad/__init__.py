"""The database side of nft-fw: the embedded server, connections, workers and records."""
