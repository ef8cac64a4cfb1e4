"""Test helpers shipped with robustzoo (e.g. a local Hugging Face Hub server)."""
