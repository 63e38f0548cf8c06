"""The HTTP edge's guards (API keys and rate limits, destination allow-list, request limits, rejection
log) and the edge's call-facing parts: the server's state, the Media Stream handler, Twilio call control.

server.py wires these in; each module holds one concern, and the guards know nothing of calls or pipelines.
"""
