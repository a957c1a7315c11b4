"""Renderers: pure functions from an audit result to text; only the CLI and plugin write."""
