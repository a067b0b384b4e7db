"""Pipelines: from a validated request and a loaded model to frames and a waveform, composed from
small stages (prompt encoding, conditioning, latent preparation, denoising, decoding)."""
