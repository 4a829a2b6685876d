"""edgeproxy: a real-time edge personalisation reverse proxy.

Read ``edgeproxy/pipeline.py`` first: one request's whole flow in six stages.
"""

__version__ = "0.1.0"
