"""The models: building (tiny preset) or loading (official single files, diffusers directories,
Gemma 3) every component once, FP8 layers, memory placement, compression geometry, downloads."""
