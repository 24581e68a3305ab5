"""Offline CLAMP pipeline: bags -> dataset -> pretraining -> fine-tuning -> checkpoint."""
