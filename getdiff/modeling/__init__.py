"""The model: the DiT network, the diffusion process and its samplers, what a task predicts,
LoRA, and the import of GET's pretrained weights."""
