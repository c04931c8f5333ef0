"""Airflow operators for kzjobs jobs, one module per launcher; built by
:func:`kzjobs.orchestrate.launch.job`.

Each module imports only its own client library, so a DAG parsed with the local
launcher never imports kubernetes or docker.
"""
