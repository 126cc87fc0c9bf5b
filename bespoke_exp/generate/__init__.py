"""Generation: LoRA checkpoint files (naming, inspection), the diffusers pipeline (the only
place diffusers is imported, with the demo builder) and generated images on disk."""
