"""kzjobs: read pre-modern Japanese books written in kuzushiji, as batch jobs."""

__version__ = "0.1.0"
