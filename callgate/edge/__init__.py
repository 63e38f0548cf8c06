"""The HTTP edge's guards: API keys and rate limits, destination allow-list, request limits, rejection log.

server.py wires these in; each module holds one concern and knows nothing of calls or pipelines.
"""
