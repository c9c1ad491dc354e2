"""LifeMonitor, serverless: the domain and API code packaged with the Chalice app."""

__version__ = "0.1.0"
