"""Accuracy and speed per backend x precision in one table, and the end-to-end demo."""
