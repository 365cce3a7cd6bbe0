"""``python -m ops``: what the cameras saw, for the people who run the system.

Reads the result documents the cloud function (and the batch job) write under the results
prefix, the inputs under the input prefix, and the failure queue; prints tables or JSON,
and writes a self-contained HTML report.  Nothing here needs a server.
"""
