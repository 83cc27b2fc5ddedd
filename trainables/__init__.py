"""Model families, losses and the per-worker training loop of vae-study."""
