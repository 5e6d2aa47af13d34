"""Contrastive training: pre-training from scratch and fine-tuning, one CPU to many GPUs."""
