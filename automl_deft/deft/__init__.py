"""Phase 2: the DEFT loop (data-enhanced fine-tuning) and its stages."""
