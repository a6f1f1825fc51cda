"""Serving: loading a verified release for inference, the engine, the OpenAI-compatible API."""
