"""Mailgate: email-native human approval of LLM summaries."""

__version__ = "0.1.0"
