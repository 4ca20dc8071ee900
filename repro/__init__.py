"""prunerepro: reproduction suite for SFP and SNF filter pruning."""
